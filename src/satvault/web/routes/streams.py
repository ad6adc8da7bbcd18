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

Where the events come from depends on ``event_stream``:

* ``outbox`` (the embedded default): the process's one reader of the outbox
  (:class:`satvault.events.outbox_feed.OutboxFeed`) hands each stream the rows of its
  invoice or wallet, read once per tick (every :data:`~satvault.events.outbox_feed.
  POLL_SECONDS`, and at once when a transaction in this process that emitted commits) for
  all open streams together: N streams cost one read per tick, not N, and none while no
  stream is open.
* ``nats``: the process's one subscriber to NATS JetStream (:class:`satvault.events.live.
  LiveFeed`) hands each stream the events its filter accepts, as the relay publishes them;
  no stream polls the database. If NATS cannot be reached when a stream opens, that stream
  takes its events from the outbox reader instead.

Either way the stream first reads what it missed from the outbox once, itself (the source of
truth that keeps every event), after registering with the feed so nothing read or relayed
meanwhile is lost; an event that came both ways is sent once, and a stream too slow for the
feed catches up from the outbox the same way. The filter is the same authorization filter
(the invoice's own subject; the events whose ``wallet_id`` is the wallet, carried in a NATS
message's ``Satvault-Wallet-Id`` header), frames are the same, and a comment line every
:data:`HEARTBEAT_SECONDS` keeps proxies from closing an idle stream. No transaction stays
open between reads.

How many streams may be open at once, per client address and per process, is
:mod:`satvault.web.streamslots`' to say: one more is a 429 before anything is read, and a
stream gives its slot back when it ends, whatever ends it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.access import visible_wallet
from satvault.accounts.service import Principal
from satvault.db import one_read
from satvault.events.cursor import StreamCursor
from satvault.events.errors import InvalidStream, StreamUnavailable
from satvault.events.jetstream import StreamEvent, subject_for
from satvault.events.live import LiveFeed
from satvault.events.models import OutboxEvent
from satvault.events.outbox import envelope
from satvault.events.outbox_feed import POLL_SECONDS, Key, OutboxFeed, key_filter
from satvault.events.relay import cursor_position
from satvault.kernel.errors import Forbidden, NotFound, SatvaultError
from satvault.logs import get_logger
from satvault.web.deps import _principal
from satvault.web.openapi import problem_responses
from satvault.web.ratelimit import PublicLimit
from satvault.web.streamslots import Slot, StreamSlots

__all__ = ["HEARTBEAT_SECONDS", "PUBLIC_INVOICE_FIELDS", "RECHECK_SECONDS",
           "Allowed", "PositionHeader", "PositionQuery", "resume_point", "router",
           "wallet_stream"]

router = APIRouter(prefix="/api/v1", tags=["events"])
log = get_logger(__name__)

HEARTBEAT_SECONDS = 15.0
# How stale a wallet stream's last look at its caller's right to it may be when it sends
# something: a key revoked, a token expired, a session ended ends the stream that soon.
RECHECK_SECONDS = 5.0
RETRY_MILLISECONDS = 2000
# A stream's first line, once it stands where it starts: the reconnection delay.
RETRY_FRAME = f"retry: {RETRY_MILLISECONDS}\n\n"
BATCH = 100
# A stream opened from now reads the ids of so many rows committed above the floor at most.
FROM_NOW_IDS = 10_000
ORDERED = 2**63 - 1  # the floor where ids commit in order: every row is below it
# What the checkout page may know anyway; never the merchant's order id, metadata or URLs.
PUBLIC_INVOICE_FIELDS = ("id", "status", "additional_status", "currency", "amount",
                         "amount_msat", "paid_msat", "seen_msat", "due_msat", "expires_at",
                         "settled_at")


def _public_payload(payload: Any, subject_id: str) -> str:
    shown = {k: payload[k] for k in PUBLIC_INVOICE_FIELDS
             if isinstance(payload, dict) and k in payload}
    shown["id"] = subject_id
    return json.dumps(shown, separators=(",", ":"))


def _frame(event: OutboxEvent, cursor: StreamCursor, *, public: bool,
           settle: bool = False) -> str:
    """The event's frame; its ``id:`` is the stream's position once the client has it.
    ``settle``: every row of the stream's below it has been sent (or is the client's)."""
    cursor.add(event.id)
    if settle:
        cursor.settle(event.id)
    payload = _public_payload(json.loads(event.payload), event.subject_id) if public \
        else event.payload
    data = envelope(event.id, event.type, event.created_at, payload)
    return f"id: {cursor.token()}\nevent: {event.type}\ndata: {data}\n\n"


def _stream_frame(event: StreamEvent, cursor: StreamCursor, *, public: bool,
                  subject_id: str) -> str:
    """The same frame from a stream message (its body is the outbox envelope). The relay
    publishes in outbox id order, fenced: the client has every event up to it now."""
    cursor.settle(event.event_id)
    if public:
        env = event.envelope
        data = envelope(event.event_id, event.type, datetime.fromisoformat(env["created_at"]),
                        _public_payload(env.get("data"), subject_id))
    else:
        data = event.body
    return f"id: {cursor.token()}\nevent: {event.type}\ndata: {data}\n\n"


async def _from_now(sessions: async_sessionmaker[AsyncSession], where: Any, floor: int
                    ) -> StreamCursor:
    """The position of a stream starting now, ``floor`` an id up to which every row committed
    before now: what is committed now counts as the client's, and a row of a transaction
    still open (on PostgreSQL below ids already committed) is sent when it commits. Above
    :data:`FROM_NOW_IDS` committed rows over the floor, the older count as before it. Where
    ids commit in order, what is committed now is every row up to the highest."""
    async with one_read(sessions) as session:
        if floor == ORDERED:
            return StreamCursor(int((await session.execute(
                select(func.coalesce(func.max(OutboxEvent.id), 0)).where(where)
            )).scalar_one()))
        ids = list((await session.execute(
            select(OutboxEvent.id).where(where, OutboxEvent.id > floor)
            .order_by(OutboxEvent.id.desc()).limit(FROM_NOW_IDS))).scalars())
    cursor = StreamCursor(ids[-1] if len(ids) == FROM_NOW_IDS else floor)
    for event_id in ids:
        cursor.add(event_id)
    return cursor


async def _catch_up(sessions: async_sessionmaker[AsyncSession], where: Any,
                    cursor: StreamCursor, low: int, floor: int, *, public: bool
                    ) -> AsyncIterator[str]:
    """What the outbox has that the client lacks: first the rows above ``low`` (at least the
    cursor's ``complete``) up to the highest it has (rows that committed late), then those
    above that, in id order. ``floor``: an id up to which every row is committed; from the
    cursor's ``complete`` on, a row sent up to it leaves nothing unsent below."""
    whole = low <= cursor.complete
    for row in await _unsent_between(sessions, where, max(low, cursor.complete), cursor.last,
                                     cursor):
        yield _frame(row, cursor, public=public, settle=whole and row.id <= floor)
    while True:
        rows = await _read(sessions, where, cursor.last)
        for row in rows:
            yield _frame(row, cursor, public=public, settle=whole and row.id <= floor)
        if len(rows) < BATCH:
            return


def _ordered(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """Whether ids commit in order (SQLite: a writer holds the write lock from its first
    statement); on PostgreSQL a lower id can commit after a higher one."""
    return bool(sessions.kw["bind"].dialect.name != "postgresql")


async def _read(sessions: async_sessionmaker[AsyncSession], where: Any, after: int
                ) -> list[OutboxEvent]:
    async with one_read(sessions) as session:
        return list((await session.execute(
            select(OutboxEvent).where(where, OutboxEvent.id > after)
            .order_by(OutboxEvent.id).limit(BATCH)
        )).scalars())


async def _outbox_events(feed: OutboxFeed, key: Key, sessions: async_sessionmaker[AsyncSession],
                         start: StreamCursor | None, *, public: bool, heartbeat: float
                         ) -> AsyncIterator[str]:
    """The outbox mode: the rows of ``key`` from the process's one reader of the outbox,
    after one read of what was missed. ``start``: the client's position (None: from now)."""
    where = key_filter(key)
    listener = await feed.listen(key)  # first: nothing read from now on is missed
    try:
        # Every row up to the feed's floor is committed (unless it is not exact yet: then
        # none is taken to be): from now means what is committed above it now, and the rows
        # that commit later are sent.
        ordered = _ordered(sessions)

        def committed() -> int:
            """An id up to which every row is committed now."""
            return ORDERED if ordered else feed.floor if feed.exact else 0

        cursor = start if start is not None else await _from_now(sessions, where, committed())
        yield RETRY_FRAME
        resume = cursor.complete  # the client has every row up to here
        floor = resume
        last_sent = time.monotonic()
        async for chunk in _catch_up(sessions, where, cursor, resume, committed(),
                                     public=public):
            yield chunk
        joined = await feed.join_mark()  # PostgreSQL: rows of ours that commit late
        while True:
            if joined is not None and feed.ended(joined):
                # Every row up to the mark is in the outbox: send those our read missed.
                for late in await _unsent_between(sessions, where, resume, joined.last,
                                                  cursor):
                    yield _frame(late, cursor, public=public)
                joined = None
            if joined is None and listener.queue.empty() and not listener.overflowed \
                    and feed.floor > floor:
                # Every row up to the feed's floor is committed and was sent (the feed hands
                # out only rows above it; not while overflowed: what was dropped is looked
                # for above the cursor's complete).
                floor = feed.floor
                cursor.settle(floor)
            row = await listener.next(heartbeat if joined is None else POLL_SECONDS)
            if listener.overflowed:  # too slow for the feed: the outbox has what was dropped
                dropped = listener.recovered()
                low = cursor.last if dropped is None else dropped - 1
                async for chunk in _catch_up(sessions, where, cursor, low, committed(),
                                             public=public):
                    yield chunk
                continue
            if row is None:
                if time.monotonic() - last_sent >= heartbeat:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
                continue
            last_sent = time.monotonic()
            if cursor.has(row.id):
                continue
            yield _frame(row, cursor, public=public, settle=ordered)
    finally:
        listener.close()


async def _unsent_between(sessions: async_sessionmaker[AsyncSession], where: Any, low: int,
                          high: int, cursor: StreamCursor) -> list[OutboxEvent]:
    """The rows in (low, high] the client lacks: their ids first, then those rows."""
    if high <= low:
        return []
    async with one_read(sessions) as session:
        ids = (await session.execute(select(OutboxEvent.id).where(
            where, OutboxEvent.id > low, OutboxEvent.id <= high))).scalars()
        missed = sorted(i for i in ids if not cursor.has(i))
        rows: list[OutboxEvent] = []
        for i in range(0, len(missed), 1000):
            rows += (await session.execute(select(OutboxEvent).where(
                OutboxEvent.id.in_(missed[i:i + 1000])).order_by(OutboxEvent.id))).scalars()
        return rows


async def _live_events(feed: LiveFeed, match: Callable[[StreamEvent], bool],
                       outbox: OutboxFeed, key: Key,
                       sessions: async_sessionmaker[AsyncSession], start: StreamCursor | None,
                       *, public: bool, subject_id: str, heartbeat: float
                       ) -> AsyncIterator[str]:
    """The NATS mode: events from the process's subscriber to the stream, after one read of
    what was missed from the outbox. The relay publishes in outbox id order, fenced (every
    lower id committed first): once an event comes from the stream, the client has every
    one up to it (those relayed before the subscription were in the outbox read)."""
    where = key_filter(key)
    try:
        listener = await feed.listen(match)  # first: nothing relayed from now on is missed
    except StreamUnavailable as exc:
        log.warning("live_updates_from_outbox", error=str(exc),
                    note="NATS unreachable: this stream reads from the outbox")
        async for chunk in _outbox_events(outbox, key, sessions, start, public=public,
                                          heartbeat=heartbeat):
            yield chunk
        return
    try:
        # Every row up to the relay's position is committed (and relayed).
        relayed = ORDERED
        if not _ordered(sessions):
            async with one_read(sessions) as session:
                relayed = await cursor_position(session)
        cursor = start if start is not None else await _from_now(sessions, where, relayed)
        yield RETRY_FRAME
        async for chunk in _catch_up(sessions, where, cursor, cursor.complete, relayed,
                                     public=public):
            yield chunk
        while True:
            event = await listener.next(heartbeat)
            if listener.overflowed:  # too slow for the feed: the outbox has what was dropped
                listener.recovered()
                async for chunk in _catch_up(sessions, where, cursor, cursor.complete, relayed,
                                             public=public):
                    yield chunk
                continue
            if event is None:
                if not feed.healthy:  # NATS gave up: what was missed is in the outbox
                    await feed.revive()
                    async for chunk in _catch_up(sessions, where, cursor, cursor.complete, relayed,
                                                 public=public):
                        yield chunk
                yield ": keep-alive\n\n"
                continue
            if cursor.has(event.event_id):
                cursor.settle(event.event_id)
            else:
                yield _stream_frame(event, cursor, public=public, subject_id=subject_id)
    finally:
        listener.close()


_POSITION = ("Where to resume: a frame's `id:` (an event id, or `<complete>:<id>,<id>,...`). "
             "Anything else is a 422 `invalid-stream`.")
# Plain strings: :meth:`StreamCursor.parse` reads them, bounds their length and refuses a
# malformed one as the documented ``invalid-stream`` (found from outside: a ``pattern`` here
# answered ``abc``, 23 digits or Arabic-Indic digits with FastAPI's generic
# ``invalid-request`` before the cursor could say what a position is).
PositionQuery = Annotated[str | None, Query(alias="last_event_id", description=_POSITION)]
PositionHeader = Annotated[str, Header(description=_POSITION)]


async def _refuse_ahead(session: AsyncSession, after: StreamCursor | None) -> None:
    """Refuse a position past the last event there is: no frame gave it, and from it every
    event would count as the client's already (found from outside: ``Last-Event-ID:
    999999999999999999`` opened a stream that stayed silent for good)."""
    if after is None:
        return
    furthest = max(after.complete, max(after.above, default=0))
    last = (await session.execute(select(func.max(OutboxEvent.id)))).scalar_one_or_none()
    if furthest > (last or 0):
        raise InvalidStream(f"Last-Event-ID is past the last event ({last or 0}): resume from "
                            "a position the stream's frames gave")


def resume_point(header: str | None, query: str | None) -> StreamCursor | None:
    """The client's position: ``Last-Event-ID`` (what EventSource sends when it reconnects),
    else the ``last_event_id`` query parameter; None: from now. Only blanks are trimmed: a
    newline or another control character reaches the parser, which refuses it."""
    value = (header or "").strip(" \t") or (query or "").strip(" \t")
    return StreamCursor.parse(value) if value else None


@router.get("/events/stream", response_class=StreamingResponse, dependencies=[PublicLimit],
            responses={200: {"content": {"text/event-stream": {}}},
                       **problem_responses(404, 429)})
async def stream(
    request: Request,
    invoice_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    wallet_id: Annotated[str | None, Query(min_length=1, max_length=40)] = None,
    last_event_id_param: PositionQuery = None,
    last_event_id: PositionHeader = "",
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    if (invoice_id is None) == (wallet_id is None):
        raise InvalidStream("give exactly one of invoice_id and wallet_id")
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    after = resume_point(last_event_id, last_event_id_param)
    if invoice_id is not None:
        key: Key = ("invoice", invoice_id)
        async with one_read(sessions) as session:
            known = (await session.execute(
                select(OutboxEvent.id).where(key_filter(key)).limit(1))).first()
            if known is not None:
                await _refuse_ahead(session, after)
        if known is None:
            raise NotFound(f"invoice {invoice_id!r} not found")
        return await _open(request, key, after or StreamCursor(), public=True)
    assert wallet_id is not None
    principal = await _principal(request, authorization, x_api_key)

    async def allowed() -> bool:
        try:
            again = await _principal(request, authorization, x_api_key)
            if not again.has("wallet:read"):
                return False
            async with one_read(sessions) as session:
                await visible_wallet(session, again, wallet_id)
        except SatvaultError:
            return False
        return True

    return await wallet_stream(request, principal, wallet_id, after, allowed=allowed)


Allowed = Callable[[], Awaitable[bool]]


async def _while_allowed(body: AsyncIterator[str], allowed: Allowed) -> AsyncIterator[str]:
    """``body``'s frames while the caller may still see them: before sending anything, if the
    last look is older than :data:`RECHECK_SECONDS`, ``allowed`` is asked again (found from
    outside: a stream opened before its key was revoked kept sending the wallet's events);
    the first no ends the stream."""
    checked = time.monotonic()
    try:
        async for frame in body:
            if time.monotonic() - checked >= RECHECK_SECONDS:
                if not await allowed():
                    log.info("stream_closed_access_ended")
                    return
                checked = time.monotonic()
            yield frame
    finally:
        close = getattr(body, "aclose", None)
        if close is not None:
            await close()


class _StreamResponse(StreamingResponse):
    """A stream holding a slot (:mod:`satvault.web.streamslots`), given back however the
    response ends: its body done, the client gone, the server stopping, an error; or never
    started at all."""

    def __init__(self, body: AsyncIterator[str], slots: StreamSlots, slot: Slot) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._slots, self._slot = slots, slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            # The server cut it (SIGTERM, past `shutdown_grace_seconds`: a stream never ends
            # by itself; a client leaving ends it inside the response, not by a cancel). An
            # ordinary end for a stream: its client reconnects with Last-Event-ID.
            log.info("stream_cut_at_shutdown")
        finally:
            self._slots.give_back(self._slot)


async def _open(request: Request, key: Key, after: StreamCursor | None, *, public: bool,
                allowed: Allowed | None = None) -> StreamingResponse:
    """The stream of ``key`` from ``after`` (None: from now), once it has a slot: from the
    process's reader of the outbox (embedded default), or its subscriber to the event stream
    (event_stream = "nats"), after one read of what was missed."""
    slots: StreamSlots = request.app.state.stream_slots
    slot = await slots.take(request, public=public)
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    outbox: OutboxFeed = request.app.state.outbox_feed
    feed: LiveFeed | None = request.app.state.live
    body: AsyncIterator[str]
    if feed is None:
        body = _outbox_events(outbox, key, sessions, after, public=public,
                              heartbeat=HEARTBEAT_SECONDS)
    else:
        prefix = feed.stream.settings.prefix
        match: Callable[[StreamEvent], bool]
        kind, ident = key
        if kind == "invoice":
            subject = subject_for(prefix, "invoice", ident)
            match = lambda e: e.subject == subject  # noqa: E731
        else:
            match = lambda e: e.wallet_id == ident  # noqa: E731
        body = _live_events(feed, match, outbox, key, sessions, after, public=public,
                            subject_id=ident if kind == "invoice" else "",
                            heartbeat=HEARTBEAT_SECONDS)
    if allowed is not None:
        body = _while_allowed(body, allowed)
    return _StreamResponse(body, slots, slot)


async def wallet_stream(request: Request, principal: Principal, wallet_id: str,
                        after: StreamCursor | None, *, allowed: Allowed) -> StreamingResponse:
    """A wallet's full events for a caller with ``wallet:read`` that sees the wallet, from
    ``after`` (None: from now), for as long as ``allowed`` says the caller still may (its
    key, token or session asked again). The API's stream, and the merchant dashboard's
    (whose principal comes from the signed-in session)."""
    if not principal.has("wallet:read"):
        raise Forbidden("this API key lacks the 'wallet:read' scope")
    key: Key = ("wallet", wallet_id)
    async with one_read(request.app.state.sessions) as session:
        await visible_wallet(session, principal, wallet_id)
        await _refuse_ahead(session, after)
    return await _open(request, key, after, public=False, allowed=allowed)
