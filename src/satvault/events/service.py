"""Webhooks of a store: create, change, delete, and read their delivery log.

Functions take the session first and keyword arguments after; none of them commits. A URL
reaches them already checked (:class:`satvault.events.ssrf.CheckedUrl`): resolving a name can
take seconds and must not happen inside a transaction.

The secret is stored sealed when a key is set, as is otherwise (see
:mod:`satvault.events.models`), and returned in clear only by :func:`create_webhook` and
:func:`rotate_secret`, so the API shows each secret once.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Store
from satvault.accounts.service import get_store
from satvault.audit.service import record
from satvault.db import utcnow
from satvault.events.catalog import normalise_subscription
from satvault.events.errors import InvalidWebhook
from satvault.events.models import (
    DELIVERY_STATUSES,
    SECRET_PURPOSE,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSwitch,
)
from satvault.events.ssrf import CheckedUrl
from satvault.kernel.errors import NotFound
from satvault.kernel.ids import new_id
from satvault.kernel.sealing import Sealer

__all__ = ["MAX_OVERLAP", "MAX_WEBHOOKS_PER_STORE", "DeliveryLog",
           "NewSecret", "create_webhook", "delete_webhook", "get_delivery", "get_webhook",
           "list_deliveries", "list_webhooks", "new_secret", "rotate_secret", "update_webhook"]

MAX_WEBHOOKS_PER_STORE = 20
SECRET_PREFIX = "whsec_"
MAX_OVERLAP = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class DeliveryLog:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


@dataclass(frozen=True, slots=True)
class NewSecret:
    """A webhook and its secret in clear, for the one answer that shows it."""

    webhook: Webhook
    secret: str


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _sealed(sealer: Sealer, webhook_id: str, secret: str) -> str:
    return sealer.seal(secret, purpose=SECRET_PURPOSE, row=webhook_id)


def _checked_secret(secret: str) -> str:
    if not 16 <= len(secret) <= 200:
        raise InvalidWebhook("a webhook secret needs 16-200 characters")
    if not all(33 <= ord(c) <= 126 for c in secret):
        raise InvalidWebhook("a webhook secret is printable ASCII without spaces")
    if Sealer.is_sealed(secret):  # it would be taken for a sealed value and not open
        raise InvalidWebhook("a webhook secret may not start with 'v1:'")
    return secret


async def create_webhook(session: AsyncSession, *, store_id: str, url: CheckedUrl,
                         events: Sequence[str], secret: str | None = None,
                         actor: str = "system", sealer: Sealer | None = None) -> NewSecret:
    """A new webhook, its secret sealed under ``sealer`` (stored as given without a key).
    The store's row is locked while its webhooks are counted, so concurrent creations stop at
    the limit together (found from outside: 30 at once left 21)."""
    store: Store = await get_store(session, store_id)
    await session.execute(select(Store.id).where(Store.id == store.id).with_for_update())
    subscription = normalise_subscription(events)
    secret = new_secret() if secret is None else _checked_secret(secret)
    count = (await session.execute(
        select(func.count()).select_from(Webhook).where(Webhook.store_id == store.id)
    )).scalar_one()
    if count >= MAX_WEBHOOKS_PER_STORE:
        raise InvalidWebhook(f"a store can have at most {MAX_WEBHOOKS_PER_STORE} webhooks")
    webhook_id = new_id("whk")
    webhook = Webhook(id=webhook_id, store_id=store.id, url=str(url.url),
                      events=" ".join(subscription),
                      secret=_sealed(sealer or Sealer(), webhook_id, secret), enabled=True,
                      created_at=utcnow())
    session.add(webhook)
    await session.flush()
    session.add(WebhookSwitch(webhook_id=webhook.id, enabled=True, at=webhook.created_at))
    await record(session, actor=actor, action="webhook.create", object=webhook.id,
                 after={"store_id": store.id, "url": webhook.url, "events": subscription,
                        "enabled": True})
    return NewSecret(webhook, secret)


async def list_webhooks(session: AsyncSession, *, store_id: str) -> list[Webhook]:
    return list((await session.execute(
        select(Webhook).where(Webhook.store_id == store_id)
        .order_by(Webhook.created_at, Webhook.id)
    )).scalars())


async def get_webhook(session: AsyncSession, *, store_id: str, webhook_id: str) -> Webhook:
    webhook = await session.get(Webhook, webhook_id)
    if webhook is None or webhook.store_id != store_id:
        raise NotFound(f"webhook {webhook_id!r} not found")
    return webhook


async def update_webhook(session: AsyncSession, *, webhook: Webhook,
                         url: CheckedUrl | None = None, events: Sequence[str] | None = None,
                         enabled: bool | None = None, actor: str = "system") -> Webhook:
    """Change the URL, the subscription or the switch. A disabled webhook gets no deliveries
    for the events emitted meanwhile; those already queued wait until it is enabled again."""
    changes: dict[str, Any] = {}
    before = {"url": webhook.url, "events": webhook.events.split(), "enabled": webhook.enabled}
    if url is not None:
        webhook.url = changes["url"] = str(url.url)
    if events is not None:
        subscription = normalise_subscription(events)
        webhook.events = " ".join(subscription)
        changes["events"] = subscription
    if enabled is not None:
        if enabled != webhook.enabled:
            webhook.switched_at = utcnow()
            session.add(WebhookSwitch(webhook_id=webhook.id, enabled=enabled,
                                      at=webhook.switched_at))
        webhook.enabled = changes["enabled"] = enabled
    await session.flush()
    await record(session, actor=actor, action="webhook.update", object=webhook.id,
                 before={k: before[k] for k in changes}, after=changes)
    return webhook


async def rotate_secret(session: AsyncSession, *, webhook: Webhook, overlap: timedelta,
                        sealer: Sealer | None = None, actor: str = "system") -> NewSecret:
    """Give the webhook a new generated secret. The one it replaces signs deliveries too, beside
    the new one, for ``overlap`` (0: not at all), so a receiver can switch secrets without
    refusing a delivery; then it is dropped. Rotating again within an overlap replaces the
    previous secret: only the last two secrets are ever in use."""
    if not timedelta(0) <= overlap <= MAX_OVERLAP:
        raise InvalidWebhook(f"the overlap is 0 to {int(MAX_OVERLAP.total_seconds())} seconds")
    sealer = sealer or Sealer()
    now = utcnow()
    old = webhook.secret
    if sealer.sealing and not sealer.is_sealed(old):  # stored before the key was set
        old = _sealed(sealer, webhook.id, old)
    secret = new_secret()
    webhook.secret = _sealed(sealer, webhook.id, secret)
    webhook.previous_secret = old if overlap else None
    webhook.previous_secret_expires_at = now + overlap if overlap else None
    await session.flush()
    await record(session, actor=actor, action="webhook.rotate_secret", object=webhook.id,
                 after={"previous_secret_expires_at":
                        None if not overlap else (now + overlap).isoformat()})
    return NewSecret(webhook, secret)


async def delete_webhook(session: AsyncSession, *, webhook: Webhook,
                         actor: str = "system") -> None:
    """Delete the webhook; its queue and delivery log go with it (ON DELETE CASCADE)."""
    await session.delete(webhook)
    await session.flush()
    await record(session, actor=actor, action="webhook.delete", object=webhook.id,
                 before={"store_id": webhook.store_id, "url": webhook.url,
                         "events": webhook.events.split(), "enabled": webhook.enabled})


async def list_deliveries(session: AsyncSession, *, webhook_id: str, limit: int = 50,
                          before_event_id: int | None = None,
                          status: str | None = None) -> list[DeliveryLog]:
    """Newest event first, each with its attempts (oldest first)."""
    if status is not None and status not in DELIVERY_STATUSES:
        raise InvalidWebhook(f"status must be one of {', '.join(DELIVERY_STATUSES)}")
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if before_event_id is not None:
        stmt = stmt.where(WebhookDelivery.event_id < before_event_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    deliveries = list((await session.execute(
        stmt.order_by(WebhookDelivery.event_id.desc()).limit(limit)
    )).scalars())
    attempts: dict[str, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        for attempt in (await session.execute(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.id)
        )).scalars():
            attempts[attempt.delivery_id].append(attempt)
    return [DeliveryLog(d, attempts[d.id]) for d in deliveries]


async def get_delivery(session: AsyncSession, delivery_id: str) -> tuple[WebhookDelivery,
                                                                         Webhook]:
    delivery = await session.get(WebhookDelivery, delivery_id)
    webhook = None if delivery is None else await session.get(Webhook, delivery.webhook_id)
    if delivery is None or webhook is None:
        raise NotFound(f"webhook delivery {delivery_id!r} not found")
    return delivery, webhook

