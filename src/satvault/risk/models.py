"""The rules engine's tables.

* ``risk_rule_sets``: every version of the rules (JSON), ``draft`` → ``live`` → ``retired``;
  at most one is live (a partial unique index). A draft goes live only when an admin other
  than its author approves it.
* ``risk_decisions``: each evaluation, with the event, the features it read, each rule's
  inputs, match and score, the total, the outcome and the rule-set version: what
  ``GET /api/v1/admin/risk/decisions/{id}`` explains and :func:`reevaluate` re-checks.
* ``risk_cases``: a review or reject decision opens one (``pending`` → ``investigating`` →
  ``closed``), with its assignee, and once closed its resolution and money decision; a
  ``version`` counts its changes (optimistic concurrency). :mod:`satvault.risk.cases`.
* ``risk_case_events``: a case's history, insert-only (a trigger refuses UPDATE and DELETE):
  notes, attachments by reference (URI + SHA-256, never the file), status changes,
  assignments, the decision, SAR steps.
* ``risk_sars``: a suspicious-activity report drafted from a case (``draft`` → ``filed``).
* ``risk_held_invoices``: the BOLT11 a Lightning withdrawal held for review pays if released
  (its destination may be an LNURL or address, resolved once, before the hold).
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

__all__ = ["CaseEventKind", "CaseStatus", "FrozenStatus", "Money", "Resolution",
           "RiskAddressLabel", "RiskCase", "RiskCaseEvent", "RiskDecision", "RiskFrozenDeposit",
           "RiskHeldInvoice", "RiskRuleSet", "RiskSar", "RuleSetStatus", "SarStatus"]


class RuleSetStatus(StrEnum):
    DRAFT = "draft"
    LIVE = "live"
    RETIRED = "retired"


class CaseStatus(StrEnum):
    PENDING = "pending"
    INVESTIGATING = "investigating"
    CLOSED = "closed"


class Resolution(StrEnum):
    CONFIRMED_RISK = "confirmed_risk"
    FALSE_POSITIVE = "false_positive"


class Money(StrEnum):
    """What a case's decision did with the money: ``release`` (a held withdrawal goes on as
    an approved one; a frozen deposit moves to the wallet's available balance), ``return``
    (a held withdrawal's hold voided, the money the customer's again), ``keep`` (a frozen
    deposit stays frozen, counted as blocked), ``none`` (nothing was held: a refused
    payment)."""

    RELEASE = "release"
    RETURN = "return"
    KEEP = "keep"
    NONE = "none"


class CaseEventKind(StrEnum):
    NOTE = "note"
    ATTACHMENT = "attachment"
    STATUS = "status"
    ASSIGNMENT = "assignment"
    DECISION = "decision"
    SAR = "sar"


class SarStatus(StrEnum):
    DRAFT = "draft"
    FILED = "filed"


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
    status: Mapped[CaseStatus] = mapped_column(StrEnumType(CaseStatus, 16), index=True)
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    assignee: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    resolution: Mapped[Resolution | None] = mapped_column(StrEnumType(Resolution, 16),
                                                          default=None)
    money: Mapped[Money | None] = mapped_column(StrEnumType(Money, 8), default=None)
    closed_by: Mapped[str | None] = mapped_column(String(80), default=None)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class RiskCaseEvent(Base):
    __tablename__ = "risk_case_events"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("risk_cases.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(80))
    kind: Mapped[CaseEventKind] = mapped_column(StrEnumType(CaseEventKind, 12))
    text: Mapped[str] = mapped_column(Text, default="")
    uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    data: Mapped[str] = mapped_column(Text, default="{}")  # JSON: from/to, amounts …


class RiskSar(Base):
    __tablename__ = "risk_sars"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("risk_cases.id"))
    status: Mapped[SarStatus] = mapped_column(StrEnumType(SarStatus, 8))
    content: Mapped[str] = mapped_column(Text)  # JSON: who, what, when, amounts, transactions
    narrative: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    filed_reference: Mapped[str | None] = mapped_column(String(120), default=None)
    filed_by: Mapped[str | None] = mapped_column(String(80), default=None)
    filed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    __table_args__ = (Index("uq_risk_sars_case_id", "case_id", unique=True),)


class RiskHeldInvoice(Base):
    __tablename__ = "risk_held_invoices"

    withdrawal_id: Mapped[str] = mapped_column(ForeignKey("withdrawals.id"), primary_key=True)
    bolt11: Mapped[str] = mapped_column(Text)
    # Null only for a row whose BOLT11 could not be read back when migration 0075 added it.
    payment_hash: Mapped[str | None] = mapped_column(String(64), index=True)


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
