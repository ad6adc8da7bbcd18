"""Ledger tables. The migrations in ``satvault/migrations`` are the DDL's source of truth
(they add the dialect-specific range checks); these classes mirror them for queries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Amount, Base, IdInt, UtcDateTime

__all__ = ["LedgerAccount", "LedgerFailedTransfer", "LedgerTransfer"]


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(160), unique=True)
    asset: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    owner_type: Mapped[str | None] = mapped_column(String(16))
    owner_id: Mapped[str | None] = mapped_column(String(40))
    debits_must_not_exceed_credits: Mapped[bool] = mapped_column(Boolean, default=False)
    credits_must_not_exceed_debits: Mapped[bool] = mapped_column(Boolean, default=False)
    debits_posted: Mapped[int] = mapped_column(Amount, default=0)
    credits_posted: Mapped[int] = mapped_column(Amount, default=0)
    debits_pending: Mapped[int] = mapped_column(Amount, default=0)
    credits_pending: Mapped[int] = mapped_column(Amount, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint(
            "NOT debits_must_not_exceed_credits "
            "OR debits_posted + debits_pending <= credits_posted",
            name="debits_within_credits",
        ),
        CheckConstraint(
            "NOT credits_must_not_exceed_debits "
            "OR credits_posted + credits_pending <= debits_posted",
            name="credits_within_debits",
        ),
        Index("ix_ledger_accounts_owner", "owner_type", "owner_id", "asset"),
    )


class LedgerTransfer(Base):
    __tablename__ = "ledger_transfers"

    seq: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(128), unique=True)
    debit_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    credit_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount: Mapped[int] = mapped_column(Amount)
    asset: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(8))
    pending_id: Mapped[str | None] = mapped_column(
        ForeignKey("ledger_transfers.id"), unique=True
    )
    state: Mapped[str | None] = mapped_column(String(8))
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    linked: Mapped[bool] = mapped_column(Boolean, default=False)
    code: Mapped[str] = mapped_column(String(32), default="")
    ref: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    dr_debits_posted: Mapped[int] = mapped_column(Amount)
    dr_credits_posted: Mapped[int] = mapped_column(Amount)
    dr_debits_pending: Mapped[int] = mapped_column(Amount)
    dr_credits_pending: Mapped[int] = mapped_column(Amount)
    cr_debits_posted: Mapped[int] = mapped_column(Amount)
    cr_credits_posted: Mapped[int] = mapped_column(Amount)
    cr_debits_pending: Mapped[int] = mapped_column(Amount)
    cr_credits_pending: Mapped[int] = mapped_column(Amount)

    __table_args__ = (
        Index("ix_ledger_transfers_debit", "debit_account_id", "seq"),
        # (PostgreSQL: with the columns the risk screening's fold of new credits reads, 0040)
        Index("ix_ledger_transfers_credit", "credit_account_id", "seq",
              postgresql_include=["created_at", "amount", "kind"]),
        Index("ix_ledger_transfers_holds", "state", "expires_at"),
    )


class LedgerFailedTransfer(Base):
    __tablename__ = "ledger_failed_transfers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    result: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
