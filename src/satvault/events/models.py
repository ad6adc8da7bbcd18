"""The outbox and the webhooks it feeds.

``outbox_events`` is append-only: one row per change worth telling anyone about, written in the
same transaction as the change (so an event exists if and only if its change committed). Its
autoincrementing id is the global order: webhook deliveries go out in that order per endpoint
and live-update streams resume from it (``Last-Event-ID``).

``webhooks`` belong to a store. The secret is not hashed: it is the HMAC key we sign every
delivery with, so we must be able to use it, not only recognise it (an API key, which we only
ever compare, is stored as a hash). With ``SATVAULT_SECRET_KEY`` set it is sealed
(:mod:`satvault.kernel.sealing`, purpose ``webhook secret``, bound to the webhook's id) and
opened only to sign; without it, it is stored as given. After a rotation the secret it
replaced stays in ``previous_secret`` (stored the same way) until
``previous_secret_expires_at``: deliveries meanwhile are signed with both.

``webhook_deliveries`` is one row per (webhook, event), created by the same transaction as the
event (the fan-out), so a restart loses nothing. Status::

    pending ──attempt ok──▶ succeeded
       │                        ▲
       └──attempt failed──▶ failed ──attempt ok──┘
                              │  (retried with backoff while next_attempt_at is set)
                              └──too many attempts──▶ dead

``next_attempt_at`` is set exactly while a delivery is waiting (pending or failed); a
dispatcher that claims one pushes it forward by a lease, so a crash mid-send only delays the
attempt. ``webhook_attempts`` is the log: one row per HTTP exchange, with the response code,
an excerpt of the answer, the timing and when the next try was scheduled.

``event_relay_cursors`` is one row per relay (``nats``): the last outbox id it published and
recorded. Which process relays is decided by the singleton workers' lease
(:mod:`satvault.leases`), whose epoch fences the cursor's writes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, IdInt, StrEnumType, UtcDateTime

__all__ = ["DELIVERY_STATUSES", "SECRET_PURPOSE", "WAITING", "WAITING_SQL", "DeliveryStatus",
           "EventRelayCursor", "OutboxEvent", "Webhook", "WebhookAttempt", "WebhookDelivery"]


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"


DELIVERY_STATUSES = tuple(DeliveryStatus)
SECRET_PURPOSE = "webhook secret"  # sealing purpose of both secret columns, bound to the id
# A delivery is waiting (``next_attempt_at`` set) in exactly these.
WAITING = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
# Written as a literal (not bound parameters) so both databases can use the partial index.
WAITING_SQL = "status IN ({})".format(",".join(f"'{s}'" for s in WAITING))


class OutboxEvent(Base):
    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(64))
    store_id: Mapped[str | None] = mapped_column(String(40))
    wallet_id: Mapped[str | None] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_outbox_events_subject", "subject_type", "subject_id", "id"),
        Index("ix_outbox_events_wallet", "wallet_id", "id"),
        # ids are never handed out twice, so a restore can move them on (events/ids.py)
        {"sqlite_autoincrement": True},
    )


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    store_id: Mapped[str] = mapped_column(ForeignKey("stores.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[str] = mapped_column(Text)  # space-separated types and wildcards
    secret: Mapped[str] = mapped_column(String(400))  # sealed: "v1:" + base64, ~4/3 longer
    previous_secret: Mapped[str | None] = mapped_column(String(400))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # When ``enabled`` last changed (None: never): the NATS fan-out, which runs after the
    # event's transaction, tells from it whether the webhook was on when the event was made.
    switched_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    @property
    def event_list(self) -> list[str]:
        return self.events.split()


class WebhookSwitch(Base):
    """Every time a webhook was switched on or off (and its state at creation): the NATS
    fan-out, which runs after the event's transaction, reads the switch in force when the
    event was emitted (found from outside: knowing only the last switch, a webhook switched
    off and on again after an event got nothing, one switched on and off again got it)."""

    __tablename__ = "webhook_switches"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    enabled: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_webhook_switches_webhook_at", "webhook_id", "at"),)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[DeliveryStatus] = mapped_column(StrEnumType(DeliveryStatus, 12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_duration_ms: Mapped[int | None] = mapped_column(Integer)
    request_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_webhook_event"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        # The queue of each endpoint, without its (ever growing) delivered history.
        Index("ix_webhook_deliveries_waiting", "webhook_id", "event_id",
              sqlite_where=text(WAITING_SQL), postgresql_where=text(WAITING_SQL)),
    )


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2000))
    request_headers: Mapped[str] = mapped_column(Text)  # JSON object
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EventRelayCursor(Base):
    __tablename__ = "event_relay_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(IdInt)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
