"""Live updates: server-sent events per invoice and per wallet, read from the outbox.

``GET /api/v1/events/stream?invoice_id=…`` is public (the checkout page knows the invoice
by its unguessable id) and shows only the public part of each event: the envelope, and of
the payload just :data:`PUBLIC_INVOICE_FIELDS`; the merchant's own fields (order ids,
metadata) stay in webhooks. An invoice that has no event yet is a 404. It starts from the
invoice's first event, so a page that loaded the invoice a moment before connecting misses
nothing.

``GET /api/v1/events/stream?wallet_id=…`` needs an API key with ``wallet:read`` that sees
the wallet, and streams full events from the moment of connection.

Both resume after ``Last-Event-ID`` (the header EventSource sends when it reconnects, or a
``last_event_id`` query parameter). Every frame is::

    id: <outbox id>
    event: <type>
    data: {"id": …, "type": …, "created_at": …, "data": {…}}

The stream polls the outbox (an indexed ``id > last`` query on the subject) every
:data:`POLL_SECONDS`, and at once when a transaction in this process that emitted commits;
a comment line every :data:`HEARTBEAT_SECONDS` keeps proxies from closing an idle stream.
No transaction stays open between polls.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.access import visible_wallet
from satvault.accounts.service import Principal
from satvault.events.errors import InvalidStream
from satvault.events.models import OutboxEvent
from satvault.events.outbox import envelope, notifier
from satvault.kernel.errors import Forbidden, NotFound
from satvault.web.deps import _principal
from satvault.web.openapi import problem_responses
from satvault.web.ratelimit import PublicLimit

__all__ = ["HEARTBEAT_SECONDS", "POLL_SECONDS", "PUBLIC_INVOICE_FIELDS", "resume_point",
           "router", "wallet_stream"]

router = APIRouter(prefix="/api/v1", tags=["events"])

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
RETRY_MILLISECONDS = 2000
BATCH = 100
# What the checkout page may know anyway; never the merchant's order id, metadata or URLs.
PUBLIC_INVOICE_FIELDS = ("id", "status", "additional_status", "currency", "amount",
                         "amount_msat", "paid_msat", "seen_msat", "due_msat", "expires_at",
                         "settled_at")


def _public(event: OutboxEvent) -> str:
    payload = json.loads(event.payload)
    shown = {k: payload[k] for k in PUBLIC_INVOICE_FIELDS
             if isinstance(payload, dict) and k in payload}
    shown["id"] = event.subject_id
    return envelope(event.id, event.type, event.created_at,
                    json.dumps(shown, separators=(",", ":")))


def _frame(event: OutboxEvent, *, public: bool) -> str:
    data = _public(event) if public else envelope(event.id, event.type, event.created_at,
                                                  event.payload)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


async def _events(sessions: async_sessionmaker[AsyncSession], where: Any, after: int, *,
                  public: bool, poll: float, heartbeat: float) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    last_sent = time.monotonic()
    while True:
        async with sessions() as session:
            rows = list((await session.execute(
                select(OutboxEvent).where(where, OutboxEvent.id > after)
                .order_by(OutboxEvent.id).limit(BATCH)
            )).scalars())
        for row in rows:
            yield _frame(row, public=public)
            after = row.id
        if rows:
            last_sent = time.monotonic()
            if len(rows) == BATCH:
                continue
        await notifier.wait(poll)
        if time.monotonic() - last_sent >= heartbeat:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()


def resume_point(header: str | None, query: int | None) -> int | None:
    value = (header or "").strip()
    if value:
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise InvalidStream("Last-Event-ID must be an event id (a non-negative integer)")
        return int(value)
    return query


@router.get("/events/stream", response_class=StreamingResponse, dependencies=[PublicLimit],
            responses={200: {"content": {"text/event-stream": {}}},
                       **problem_responses(404)})
async def stream(
    request: Request,
    invoice_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    wallet_id: Annotated[str | None, Query(min_length=1, max_length=40)] = None,
    last_event_id_param: Annotated[int | None, Query(alias="last_event_id", ge=0,
                                                             lt=10**18)] = None,
    last_event_id: Annotated[str, Header(pattern=r"^[0-9]{0,18}$")] = "",
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    if (invoice_id is None) == (wallet_id is None):
        raise InvalidStream("give exactly one of invoice_id and wallet_id")
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    after = resume_point(last_event_id, last_event_id_param)
    where: ColumnElement[bool]
    if invoice_id is not None:
        where = (OutboxEvent.subject_type == "invoice") & (OutboxEvent.subject_id == invoice_id)
        async with sessions() as session:
            known = (await session.execute(select(OutboxEvent.id).where(where).limit(1))).first()
        if known is None:
            raise NotFound(f"invoice {invoice_id!r} not found")
        public, after = True, after or 0
    else:
        assert wallet_id is not None
        principal = await _principal(request, authorization, x_api_key)
        return await wallet_stream(sessions, principal, wallet_id, after)
    return _response(sessions, where, after, public=public)


def _response(sessions: async_sessionmaker[AsyncSession], where: Any, after: int, *,
              public: bool) -> StreamingResponse:
    return StreamingResponse(
        _events(sessions, where, after, public=public, poll=POLL_SECONDS,
                heartbeat=HEARTBEAT_SECONDS),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def wallet_stream(sessions: async_sessionmaker[AsyncSession], principal: Principal,
                        wallet_id: str, after: int | None) -> StreamingResponse:
    """A wallet's full events for a caller with ``wallet:read`` that sees the wallet, from
    ``after`` (None: from now). The API's stream, and the merchant dashboard's (whose
    principal comes from the signed-in session)."""
    if not principal.has("wallet:read"):
        raise Forbidden("this API key lacks the 'wallet:read' scope")
    where = OutboxEvent.wallet_id == wallet_id
    async with sessions() as session:
        await visible_wallet(session, principal, wallet_id)
        if after is None:
            after = int((await session.execute(
                select(func.coalesce(func.max(OutboxEvent.id), 0)).where(where)
            )).scalar_one())
    return _response(sessions, where, after, public=False)
