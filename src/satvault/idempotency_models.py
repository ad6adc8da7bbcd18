"""Idempotency keys for POSTs that move money or create objects (see ``web/idempotency.py``),
and their purge once expired (:func:`purge_expired`, the ``idempotency-purge`` worker)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Integer, String, Text, UniqueConstraint, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, IdInt, StrEnumType, UtcDateTime

__all__ = ["IdempotencyKey", "IdempotencyStatus", "purge_expired"]


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


async def purge_expired(session: AsyncSession, *, now: datetime, stale: timedelta,
                        batch: int = 5000) -> int:
    """Delete up to ``batch`` keys past their expiry (24 h after their first use at least):
    answered ones, and claims whose request is gone (no heartbeat for ``stale``). A claim
    still beating is left, however old. Returns how many went; a small batch keeps each
    transaction short while the API writes keys beside it."""
    row = IdempotencyKey
    gone = select(row.id).where(row.expires_at < now, or_(
        row.status == IdempotencyStatus.DONE, row.heartbeat_at.is_(None),
        row.heartbeat_at < now - stale)).order_by(row.expires_at).limit(batch)
    ids = (await session.execute(gone)).scalars().all()
    if ids:
        await session.execute(delete(row).where(row.id.in_(ids), row.expires_at < now))
    return len(ids)
