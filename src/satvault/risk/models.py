"""The rules engine's tables.

* ``risk_rule_sets``: every version of the rules (JSON), ``draft`` → ``live`` → ``retired``;
  at most one is live (a partial unique index). A draft goes live only when an admin other
  than its author approves it.
* ``risk_decisions``: each evaluation, with the event, the features it read, each rule's
  inputs, match and score, the total, the outcome and the rule-set version: what
  ``GET /api/v1/admin/risk/decisions/{id}`` explains and :func:`reevaluate` re-checks.
* ``risk_cases``: a review or reject decision opens one (``pending`` → ``investigating`` →
  ``closed``). Only the case row lives here; working cases is another part of issue 12.
* ``risk_frozen_deposits``: a deposit the rules sent to review or reject, credited to the
  wallet's frozen sub-balance: ``frozen`` → ``released`` (to the wallet) or ``blocked`` (kept
  frozen by a case decision); ``reversed`` when a reorg took the deposit away while frozen.
* ``risk_address_labels``: operator-loaded lists (``sanctioned``, ``blacklist``, ``mixer``,
  ``darknet``, ``gambling``, ``scam``, ``exchange`` …), one row per address and label, with a
  score and, where the index that fed it knows it, the date the address was first seen.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Amount, Base, IdInt, StrEnumType, UtcDateTime
from satvault.risk.rules import Outcome

__all__ = ["CaseStatus", "FrozenStatus", "RiskAddressLabel", "RiskCase", "RiskDecision",
           "RiskFrozenDeposit", "RiskRuleSet", "RuleSetStatus"]


class RuleSetStatus(StrEnum):
    DRAFT = "draft"
    LIVE = "live"
    RETIRED = "retired"


class CaseStatus(StrEnum):
    PENDING = "pending"
    INVESTIGATING = "investigating"
    CLOSED = "closed"


class FrozenStatus(StrEnum):
    FROZEN = "frozen"
    RELEASED = "released"
    BLOCKED = "blocked"
    REVERSED = "reversed"


_ONE_LIVE = "status = 'live'"


class RiskRuleSet(Base):
    __tablename__ = "risk_rule_sets"

    version: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    status: Mapped[RuleSetStatus] = mapped_column(StrEnumType(RuleSetStatus, 8))
    rules: Mapped[str] = mapped_column(Text)
    note: Mapped[str] = mapped_column(String(500), default="")
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    approved_by: Mapped[str | None] = mapped_column(String(80))
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("uq_risk_rule_sets_one_live", "status", unique=True,
              sqlite_where=text(_ONE_LIVE), postgresql_where=text(_ONE_LIVE)),
    )


class RiskDecision(Base):
    __tablename__ = "risk_decisions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    wallet_id: Mapped[str] = mapped_column(String(40), index=True)
    subject_type: Mapped[str] = mapped_column(String(16))  # withdrawal | deposit
    subject_id: Mapped[str | None] = mapped_column(String(128), index=True)
    rule_set_version: Mapped[int] = mapped_column(ForeignKey("risk_rule_sets.version"))
    outcome: Mapped[Outcome] = mapped_column(StrEnumType(Outcome, 8))
    score: Mapped[int] = mapped_column(Integer)
    sanctioned: Mapped[bool] = mapped_column(Boolean, default=False)
    amount_msat: Mapped[int] = mapped_column(Amount)
    features: Mapped[str] = mapped_column(Text)  # JSON: the event and every computed feature
    results: Mapped[str] = mapped_column(Text)  # JSON: per rule {id, matched, score, inputs}


class RiskCase(Base):
    __tablename__ = "risk_cases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("risk_decisions.id"), index=True)
    wallet_id: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[CaseStatus] = mapped_column(StrEnumType(CaseStatus, 16))
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RiskAddressLabel(Base):
    __tablename__ = "risk_address_labels"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(32))
    score: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(120), default="")
    first_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    loaded_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("uq_risk_address_labels", "address", "label", unique=True),
    )


class RiskFrozenDeposit(Base):
    __tablename__ = "risk_frozen_deposits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("risk_decisions.id"), unique=True)
    case_id: Mapped[str | None] = mapped_column(String(40))
    wallet_id: Mapped[str] = mapped_column(String(40), index=True)
    rail: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(128), index=True)
    credit_id: Mapped[str] = mapped_column(String(128), unique=True)
    amount_msat: Mapped[int] = mapped_column(Amount)
    frozen_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    wallet_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    sanctioned: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[FrozenStatus] = mapped_column(StrEnumType(FrozenStatus, 16))
    decided_by: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
