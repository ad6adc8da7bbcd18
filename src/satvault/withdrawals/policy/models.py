"""The withdrawal policy's tables (migration 0020).

* ``withdrawal_policies``: every version of the policy; one is ``live``. A version is
  ``proposed`` by one admin and made live by another (the four-eyes rule is also a CHECK);
  the version it replaces becomes ``superseded``.
* ``approver_groups`` / ``approver_group_members``: who may approve (user ids);
  ``approver_group_changes`` (migration 0036): a member added or removed, ``pending`` until a
  second admin approves it (then applied) or rejects it — the four-eyes rule is a CHECK too.
* ``withdrawal_approval_requests``: one per withdrawal the policy held, with the rule that
  held it, how many approvals it needs from which group, who initiated it and when it expires;
  ``withdrawal_approvals``: each approver's decision, once per approver.
* ``withdrawal_allowlist``: a wallet's known destinations, each usable only after its
  cool-down (``usable_after``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, IdInt, StrEnumType, UtcDateTime

__all__ = ["AllowlistEntry", "ApprovalRequest", "ApprovalStatus", "ApproverGroup",
           "ApproverGroupChange", "ApproverGroupMember", "ChangeAction", "ChangeStatus",
           "PolicyStatus", "PolicyVersion", "WithdrawalApproval"]


class PolicyStatus(StrEnum):
    PROPOSED = "proposed"
    LIVE = "live"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"


class ChangeAction(StrEnum):
    ADD = "add"
    REMOVE = "remove"


class ChangeStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class ApprovalStatus(StrEnum):
    AWAITING = "awaiting"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class PolicyVersion(Base):
    __tablename__ = "withdrawal_policies"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[PolicyStatus] = mapped_column(StrEnumType(PolicyStatus, 12))
    rules: Mapped[str] = mapped_column(Text)  # the canonical JSON of core.Policy
    proposed_by: Mapped[str] = mapped_column(String(40))
    proposed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    approved_by: Mapped[str | None] = mapped_column(String(40))
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApproverGroup(Base):
    __tablename__ = "approver_groups"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApproverGroupMember(Base):
    __tablename__ = "approver_group_members"

    group_name: Mapped[str] = mapped_column(ForeignKey("approver_groups.name"),
                                            primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApproverGroupChange(Base):
    """A member added to or removed from a group: proposed by one admin, applied when a
    second approves it."""

    __tablename__ = "approver_group_changes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(60))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    action: Mapped[ChangeAction] = mapped_column(StrEnumType(ChangeAction, 8))
    status: Mapped[ChangeStatus] = mapped_column(StrEnumType(ChangeStatus, 10))
    proposed_by: Mapped[str] = mapped_column(String(40))
    decided_by: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApprovalRequest(Base):
    __tablename__ = "withdrawal_approval_requests"

    withdrawal_id: Mapped[str] = mapped_column(ForeignKey("withdrawals.id"), primary_key=True)
    status: Mapped[ApprovalStatus] = mapped_column(StrEnumType(ApprovalStatus, 12))
    policy_version: Mapped[int] = mapped_column(Integer)
    rule: Mapped[str] = mapped_column(String(80))
    group_name: Mapped[str] = mapped_column(String(60))
    required: Mapped[int] = mapped_column(Integer)
    initiator: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WithdrawalApproval(Base):
    __tablename__ = "withdrawal_approvals"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    withdrawal_id: Mapped[str] = mapped_column(
        ForeignKey("withdrawal_approval_requests.withdrawal_id"))
    approver: Mapped[str] = mapped_column(String(40))
    decision: Mapped[str] = mapped_column(String(8))  # approve | reject
    at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("withdrawal_id", "approver",
                                       name="uq_withdrawal_approvals_once"),)


class AllowlistEntry(Base):
    __tablename__ = "withdrawal_allowlist"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    destination: Mapped[str] = mapped_column(String(2000))  # normalised (core.normalise)
    kind: Mapped[str] = mapped_column(String(12))  # address | node | lnurl
    label: Mapped[str] = mapped_column(String(120), default="")
    added_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    usable_after: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("wallet_id", "destination",
                                       name="uq_withdrawal_allowlist_entry"),)
