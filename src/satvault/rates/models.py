"""The rates a ``RateService`` accepted, kept so that every process, and the next one after a
restart, bounds a new rate by the same history (``memory.DbRateMemory``).

One row per accepted fetch (a rate-cache miss, about one a minute per process and currency),
numbered per currency by ``seq``: two processes accepting at the same moment both try the
same next number and the primary key lets only one in, so the other checks its rate again
against the first one's. Rows older than the longest bound's window are deleted as new ones
come. ``accepted_by`` names the admin who accepted a rate by hand (``satvault rates accept``),
which replaces every earlier row of its currency; ``NULL`` for a rate the bounds let through.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, UtcDateTime

__all__ = ["AcceptedRate"]


class AcceptedRate(Base):
    __tablename__ = "accepted_rates"
    __table_args__ = (Index("ix_accepted_rates_currency_accepted_at", "currency",
                            "accepted_at"),
                      CheckConstraint("minor_per_btc > 0", name="positive"))

    currency: Mapped[str] = mapped_column(String(3), primary_key=True)  # BTC/<currency>
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    minor_per_btc: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(200))  # "kraken", "median(kraken,coinbase)"
    accepted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    accepted_by: Mapped[str | None] = mapped_column(String(80))
