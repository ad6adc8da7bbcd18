"""The audit log's table. Migration 0017 made ``audit_events`` the hash-chained log (its DDL,
with the triggers that refuse UPDATE and DELETE, is the source of truth); this mirrors it.
``audit_anchors`` (migration 0021) tracks the heads committed on chain in sweeps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, IdInt, StrEnumType, UtcDateTime

__all__ = ["AnchorStatus", "AuditAnchor", "AuditEvent"]


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


class AnchorStatus(StrEnum):
    """An on-chain anchor: ``requested`` (waiting for the next sweep) → ``planned`` (in a
    sweep's transaction) → ``confirmed`` (that transaction is in a block); ``superseded``
    when a newer request took its place before any sweep carried it. A sweep that is given
    up (abandoned) puts its anchor back to ``requested``."""

    REQUESTED = "requested"
    PLANNED = "planned"
    CONFIRMED = "confirmed"
    SUPERSEDED = "superseded"


class AuditAnchor(Base):
    """The chain's head (``seq``, ``hash``) to be, or having been, committed on chain in a
    sweep's ``OP_RETURN``. Mutable bookkeeping; the proof is the transaction itself."""

    __tablename__ = "audit_anchors"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[AnchorStatus] = mapped_column(StrEnumType(AnchorStatus, 12))
    requested_by: Mapped[str] = mapped_column(String(80))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The sweep (payout_batches.id: a foreign key in the database; not named here, the audit
    # package sits below the payouts one) that carries it, its txid and block once confirmed.
    batch_id: Mapped[str | None] = mapped_column(String(40), index=True)
    txid: Mapped[str | None] = mapped_column(String(64), index=True)
    block_height: Mapped[int | None] = mapped_column(Integer)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
