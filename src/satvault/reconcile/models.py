"""The reconciliation's memory.

* ``reconciliation_runs``: one row per run: when, at which block, how many differences, and
  the differences themselves (JSON), so an operator can see what a run saw.
* ``reconciliation_incidents``: one row per difference (kind, subject) while it lasts:
  first and last seen, on how many consecutive runs, when it was raised for a person and when
  it went away. At most one open incident per (kind, subject) (a partial unique index).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, IdInt, UtcDateTime

__all__ = ["ReconciliationIncident", "ReconciliationRun"]

_OPEN = "resolved_at IS NULL"


class ReconciliationRun(Base):
    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime)
    height: Mapped[int | None] = mapped_column(Integer)
    differences: Mapped[int] = mapped_column(Integer)
    report: Mapped[str] = mapped_column(Text)  # JSON: the ways checked and each difference


class ReconciliationIncident(Base):
    __tablename__ = "reconciliation_incidents"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    way: Mapped[str] = mapped_column(String(8))  # ledger | records | world
    subject: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    seen_runs: Mapped[int] = mapped_column(Integer)  # consecutive runs that saw it
    raised_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("uq_reconciliation_incidents_open", "kind", "subject", unique=True,
              sqlite_where=text(_OPEN), postgresql_where=text(_OPEN)),
    )
