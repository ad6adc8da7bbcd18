"""Idempotency keys for POSTs that move money or create objects (see ``web/idempotency.py``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, IdInt, StrEnumType, UtcDateTime

__all__ = ["IdempotencyKey", "IdempotencyStatus"]


class IdempotencyStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(80))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[IdempotencyStatus] = mapped_column(StrEnumType(IdempotencyStatus, 8))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    # The running request that owns the claim, and when it last said it is alive.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("owner", "key", name="owner_key"),)
