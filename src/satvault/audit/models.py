"""The audit log's table. Migration 0017 made ``audit_events`` the hash-chained log (its DDL,
with the triggers that refuse UPDATE and DELETE, is the source of truth); this mirrors it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, IdInt, UtcDateTime

__all__ = ["AuditEvent"]


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(80))
    object: Mapped[str] = mapped_column(String(120), default="")
    state_before: Mapped[str] = mapped_column(Text, default="null")  # JSON text
    state_after: Mapped[str] = mapped_column(Text, default="null")   # JSON text
    # Set once, from NULL, by the sealer (satvault.audit.service.seal); never changed again.
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))
