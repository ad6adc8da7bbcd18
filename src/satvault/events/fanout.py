"""Webhook fan-out from the event stream (``event_stream = "nats"``).

With the embedded default (``outbox``) the transaction that writes an event also queues one
``webhook_deliveries`` row per subscribed webhook. With ``nats`` that transaction writes only
the event; the relay puts it on the stream, and :class:`WebhookFanout` — the handler of the
durable consumer ``satvault-webhooks`` on ``<prefix>.>`` — queues the deliveries (wallet
events, which no webhook receives, are acknowledged without a look at the database). From
there the webhook dispatcher sends them exactly as before (signed, in outbox order per
endpoint, retried from the database).

For each message, in one transaction:

* the event is read back from the outbox by its id (the database is the source of truth; the
  message only says which event);
* every webhook of the event's store enabled when the event was made (the last of its
  ``webhook_switches`` at or before the event's time) and subscribed to its type, created no
  later than the event (a webhook hears what happens after it exists, as with the outbox fan-out),
  gets a delivery; the unique ``(webhook_id, event_id)`` makes a second delivery of the same
  message (a redelivery, a restart, a replay of the whole stream) queue nothing more;
* the webhook worker of this process is woken once it commits.

The consumer acknowledges the message only after that commit, so a crash in between means
the message comes again and the insert finds its rows already there.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, literal, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.db import insert_ignoring, utcnow
from satvault.events.catalog import matches
from satvault.events.jetstream import Refused, StreamEvent
from satvault.events.models import (
    DeliveryStatus,
    OutboxEvent,
    Webhook,
    WebhookDelivery,
    WebhookSwitch,
)
from satvault.events.outbox import envelope, mark_changed
from satvault.kernel.ids import new_id
from satvault.logs import get_logger

__all__ = ["CONSUMER", "WebhookFanout"]

log = get_logger(__name__)
deliveries_t = cast(Table, WebhookDelivery.__table__)
CONSUMER = "satvault-webhooks"


class WebhookFanout:
    """The handler of the webhook consumer: queue one event's deliveries (idempotent)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.queued = 0

    def _insert(self, session: AsyncSession) -> Any:
        return insert_ignoring(session.get_bind().dialect.name, deliveries_t, "webhook_id",
                               "event_id")

    async def __call__(self, message: StreamEvent) -> None:
        if message.type.startswith("wallet."):  # live updates only: never a webhook's
            return
        now = utcnow()
        async with self.sessions() as s, s.begin():
            event = await s.get(OutboxEvent, message.event_id)
            if event is None:  # none of ours: refused, so it moves no position
                raise Refused(f"event {message.event_id} is not in the outbox")
            if event.store_id is None:
                return
            # The webhooks that were on when the event was made (as the outbox mode picks
            # them, in the event's own transaction): the switch in force then, however often
            # it moved since; a delivery for one switched off since waits until it is on.
            on_then = (select(WebhookSwitch.enabled)
                       .where(WebhookSwitch.webhook_id == Webhook.id,
                              WebhookSwitch.at <= event.created_at)
                       .order_by(WebhookSwitch.at.desc(), WebhookSwitch.id.desc())
                       .limit(1).correlate(Webhook).scalar_subquery())
            hooks = (await s.execute(
                select(Webhook.id, Webhook.events)
                .where(Webhook.store_id == event.store_id, on_then == literal(True),
                       Webhook.created_at <= event.created_at)
                .order_by(Webhook.id))).all()
            body = envelope(event.id, event.type, event.created_at, event.payload)
            rows = [{"id": new_id("whd"), "webhook_id": hook.id, "event_id": event.id,
                     "event_type": event.type, "status": DeliveryStatus.PENDING,
                     "attempts": 0, "next_attempt_at": event.created_at,
                     "request_body": body, "created_at": now, "updated_at": now}
                    for hook in hooks if matches(hook.events.split(), event.type)]
            if not rows:
                return
            added = (await s.execute(self._insert(s).values(rows)
                                     .returning(deliveries_t.c.id))).scalars().all()
            if added:
                self.queued += len(added)
                mark_changed(s, deliveries=True)
