"""Proof-of-liabilities tables: one row per publication round, one per account proven in it.
The migration (0016_liabilities) is the DDL's source of truth; these mirror it for queries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Amount, Base, UtcDateTime

__all__ = ["LiabilityProof", "LiabilityRound"]


class LiabilityRound(Base):
    """A published root: ``root`` (hex) over ``leaves`` leaves summing to ``total_msat``, at
    block ``height``."""

    __tablename__ = "liability_rounds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    asset: Mapped[str] = mapped_column(String(16))
    height: Mapped[int] = mapped_column(Integer)
    root: Mapped[str] = mapped_column(String(64), unique=True)
    total_msat: Mapped[int] = mapped_column(Amount)
    leaves: Mapped[int] = mapped_column(Integer)
    accounts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class LiabilityProof(Base):
    """One wallet's proof in one round (the JSON of ``proofs/<wallet>.json``)."""

    __tablename__ = "liability_proofs"

    round_id: Mapped[str] = mapped_column(
        ForeignKey("liability_rounds.id", ondelete="CASCADE"), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), primary_key=True)
    balance_msat: Mapped[int] = mapped_column(Amount)
    proof: Mapped[str] = mapped_column(Text)
