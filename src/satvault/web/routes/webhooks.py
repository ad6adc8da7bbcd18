"""Webhook endpoints (per store). The live-update stream is :mod:`satvault.web.routes.streams`.

Ownership: a store key owns its store, a merchant key its merchant's stores, an admin key
every store; anyone else gets the same 404 as for a store that does not exist. Changing
webhooks needs ``stores:write`` or ``webhooks:write``; reading them also ``stores:read``.
A webhook URL is checked by the SSRF guard before it is stored (422 when refused); its DNS
lookup happens between two short transactions, never inside one. Secrets are sealed under
``SATVAULT_SECRET_KEY`` (the settings' sealer) and shown in clear only in the answers to
creation and ``POST /webhooks/{id}/rotate-secret``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.access import owned_store
from satvault.accounts.service import Principal
from satvault.auth.credentials import sealer_for
from satvault.events import service
from satvault.events.delivery import redeliver
from satvault.events.models import Webhook, WebhookAttempt, WebhookDelivery
from satvault.events.schemas import (
    AttemptOut,
    DeliveryOut,
    DeliveryPage,
    SecretRotatedOut,
    SecretRotationIn,
    WebhookCreatedOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)
from satvault.events.ssrf import check
from satvault.kernel.errors import NotFound
from satvault.kernel.retrying import retrying
from satvault.web.deps import SessionDep, require_any_scope
from satvault.web.fields import EventIdBefore
from satvault.web.ratelimit import CreateLimit

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["webhooks"])


Writer = Annotated[Principal, Depends(require_any_scope("stores:write", "webhooks:write"))]
Reader = Annotated[Principal, Depends(require_any_scope("stores:read", "stores:write",
                                                        "webhooks:write"))]


def _actor(principal: Principal) -> str:
    return f"key:{principal.key_id}"


def _out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(id=webhook.id, store_id=webhook.store_id, url=webhook.url,
                      events=webhook.event_list, enabled=webhook.enabled,
                      created_at=webhook.created_at)


def _headers(attempt: WebhookAttempt) -> dict[str, str]:
    loaded = json.loads(attempt.request_headers)
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def _delivery_out(delivery: WebhookDelivery,
                  attempts: list[WebhookAttempt] | None = None) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id, webhook_id=delivery.webhook_id, event_id=delivery.event_id,
        event_type=delivery.event_type, status=delivery.status, attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at, last_status_code=delivery.last_status_code,
        last_error=delivery.last_error, last_duration_ms=delivery.last_duration_ms,
        request_body=delivery.request_body, created_at=delivery.created_at,
        updated_at=delivery.updated_at,
        attempt_log=[AttemptOut(
            attempt=a.attempt, started_at=a.started_at, duration_ms=a.duration_ms, url=a.url,
            request_headers=_headers(a), status_code=a.status_code,
            response_excerpt=a.response_excerpt, error=a.error,
            next_attempt_at=a.next_attempt_at,
        ) for a in attempts or []],
    )


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


@router.post("/stores/{store_id}/webhooks", response_model=WebhookCreatedOut,
                      status_code=201, dependencies=[CreateLimit])
async def create_webhook(store_id: str, body: WebhookIn, request: Request,
                         principal: Writer) -> WebhookCreatedOut:
    sessions = _sessions(request)
    await retrying(sessions, lambda s: owned_store(s, principal, store_id))
    checked = await check(body.url, environment=request.app.state.settings.environment)

    async def work(session: AsyncSession) -> service.NewSecret:
        await owned_store(session, principal, store_id)
        return await service.create_webhook(session, store_id=store_id, url=checked,
                                            events=body.events, secret=body.secret,
                                            actor=_actor(principal),
                                            sealer=sealer_for(request.app.state.settings))

    created = await retrying(sessions, work)
    return WebhookCreatedOut(**_out(created.webhook).model_dump(), secret=created.secret)


@router.get("/stores/{store_id}/webhooks", response_model=list[WebhookOut])
async def list_webhooks(store_id: str, session: SessionDep,
                        principal: Reader) -> list[WebhookOut]:
    await owned_store(session, principal, store_id)
    return [_out(w) for w in await service.list_webhooks(session, store_id=store_id)]


@router.get("/stores/{store_id}/webhooks/{webhook_id}", response_model=WebhookOut)
async def get_webhook(store_id: str, webhook_id: str, session: SessionDep,
                      principal: Reader) -> WebhookOut:
    await owned_store(session, principal, store_id)
    return _out(await service.get_webhook(session, store_id=store_id, webhook_id=webhook_id))


@router.patch("/stores/{store_id}/webhooks/{webhook_id}", response_model=WebhookOut)
async def update_webhook(store_id: str, webhook_id: str, body: WebhookPatch,
                         request: Request, principal: Writer) -> WebhookOut:
    sessions = _sessions(request)

    async def find(session: AsyncSession) -> Webhook:
        await owned_store(session, principal, store_id)
        return await service.get_webhook(session, store_id=store_id, webhook_id=webhook_id)

    await retrying(sessions, find)
    checked = None
    if body.url is not None:
        checked = await check(body.url, environment=request.app.state.settings.environment)

    async def work(session: AsyncSession) -> Webhook:
        return await service.update_webhook(session, webhook=await find(session), url=checked,
                                            events=body.events, enabled=body.enabled,
                                            actor=_actor(principal))

    return _out(await retrying(sessions, work))


@router.delete("/stores/{store_id}/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(store_id: str, webhook_id: str, session: SessionDep,
                         principal: Writer) -> Response:
    await owned_store(session, principal, store_id)
    webhook = await service.get_webhook(session, store_id=store_id, webhook_id=webhook_id)
    await service.delete_webhook(session, webhook=webhook, actor=_actor(principal))
    return Response(status_code=204)


@router.post("/webhooks/{webhook_id}/rotate-secret", response_model=SecretRotatedOut,
             dependencies=[CreateLimit])
async def rotate_secret(webhook_id: str, request: Request, principal: Writer,
                        body: SecretRotationIn | None = None) -> SecretRotatedOut:
    """A new secret, shown once; the old one also signs for ``overlap_seconds``. No
    Idempotency-Key (like the other webhook POSTs): a retried rotation rotates again, and the
    secret from the lost answer is then the previous one, still accepted for the overlap."""
    body = body or SecretRotationIn()
    sealer = sealer_for(request.app.state.settings)

    async def work(session: AsyncSession) -> service.NewSecret:
        webhook = await session.get(Webhook, webhook_id)
        if webhook is None:
            raise NotFound(f"webhook {webhook_id!r} not found")
        try:
            await owned_store(session, principal, webhook.store_id)
        except NotFound:
            raise NotFound(f"webhook {webhook_id!r} not found") from None
        return await service.rotate_secret(
            session, webhook=webhook, overlap=timedelta(seconds=body.overlap_seconds),
            sealer=sealer, actor=_actor(principal))

    rotated = await retrying(_sessions(request), work)
    return SecretRotatedOut(**_out(rotated.webhook).model_dump(), secret=rotated.secret,
                            previous_secret_expires_at=rotated.webhook.previous_secret_expires_at)


@router.get("/stores/{store_id}/webhooks/{webhook_id}/deliveries",
                     response_model=DeliveryPage)
async def list_deliveries(
    store_id: str, webhook_id: str, session: SessionDep, principal: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: EventIdBefore = None,
    status: Annotated[str | None, Query(max_length=12)] = None,
) -> DeliveryPage:
    await owned_store(session, principal, store_id)
    await service.get_webhook(session, store_id=store_id, webhook_id=webhook_id)
    logs = await service.list_deliveries(session, webhook_id=webhook_id, limit=limit,
                                         before_event_id=before, status=status)
    return DeliveryPage(items=[_delivery_out(x.delivery, x.attempts) for x in logs],
                        next_before=logs[-1].delivery.event_id if len(logs) == limit else None)


@router.post("/webhook-deliveries/{delivery_id}/redeliver",
                      response_model=DeliveryOut, status_code=202, dependencies=[CreateLimit])
async def redeliver_delivery(delivery_id: str, session: SessionDep,
                             principal: Writer) -> DeliveryOut:
    _, webhook = await service.get_delivery(session, delivery_id)
    try:
        await owned_store(session, principal, webhook.store_id)
    except NotFound:
        raise NotFound(f"webhook delivery {delivery_id!r} not found") from None
    delivery = await redeliver(session, delivery_id)
    return _delivery_out(delivery)

