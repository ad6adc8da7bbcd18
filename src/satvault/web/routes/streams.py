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

* ``outbox`` (the embedded default): the stream polls the outbox (an indexed ``id > floor``
  query on the subject, skipping what it sent: on PostgreSQL an id can commit after a higher
  one, see :class:`_Unsent`) every :data:`POLL_SECONDS`, and at once when a transaction in
  this process that emitted commits.
* ``nats``: the process's one subscriber to NATS JetStream (:class:`satvault.events.live.
  LiveFeed`) hands each stream the events its filter accepts, as the relay publishes them;
  no stream polls the database. At connection (and after a resume point) the stream first
  reads what it missed from the outbox once, the source of truth that keeps every event
  (the stream's retention is bounded), after registering with the feed so nothing relayed
  meanwhile is lost; an event that came both ways is sent once. A stream too slow for the
  feed catches up from the outbox the same way. If NATS cannot be reached when a stream
  opens, that stream falls back to polling the outbox.

Either way the filter is the same authorization filter (the invoice's own subject; the
events whose ``wallet_id`` is the wallet, carried in the message's ``Satvault-Wallet-Id``
header), frames are the same, and a comment line every :data:`HEARTBEAT_SECONDS` keeps
proxies from closing an idle stream. No transaction stays open between reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.access import visible_wallet
from satvault.accounts.service import Principal
from satvault.db import one_read, sequence_snapshot
from satvault.events.errors import InvalidStream, StreamUnavailable
from satvault.events.jetstream import StreamEvent, subject_for
from satvault.events.live import LiveFeed
from satvault.events.models import OutboxEvent
from satvault.events.outbox import envelope, notifier
from satvault.kernel.errors import Forbidden, NotFound, SatvaultError
from satvault.logs import get_logger
from satvault.web.deps import _principal
from satvault.web.openapi import problem_responses
from satvault.web.ratelimit import PublicLimit

__all__ = ["HEARTBEAT_SECONDS", "POLL_SECONDS", "PUBLIC_INVOICE_FIELDS", "RECHECK_SECONDS",
           "Allowed", "resume_point", "router", "wallet_stream"]

router = APIRouter(prefix="/api/v1", tags=["events"])
log = get_logger(__name__)

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
# How stale a wallet stream's last look at its caller's right to it may be when it sends
# something: a key revoked, a token expired, a session ended ends the stream that soon.
RECHECK_SECONDS = 5.0
RETRY_MILLISECONDS = 2000
BATCH = 100
# What the checkout page may know anyway; never the merchant's order id, metadata or URLs.
PUBLIC_INVOICE_FIELDS = ("id", "status", "additional_status", "currency", "amount",
                         "amount_msat", "paid_msat", "seen_msat", "due_msat", "expires_at",
                         "settled_at")


def _public_payload(payload: Any, subject_id: str) -> str:
    shown = {k: payload[k] for k in PUBLIC_INVOICE_FIELDS
             if isinstance(payload, dict) and k in payload}
    shown["id"] = subject_id
    return json.dumps(shown, separators=(",", ":"))


def _frame(event: OutboxEvent, *, public: bool) -> str:
    payload = _public_payload(json.loads(event.payload), event.subject_id) if public \
        else event.payload
    data = envelope(event.id, event.type, event.created_at, payload)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


def _stream_frame(event: StreamEvent, *, public: bool, subject_id: str) -> str:
    """The same frame from a stream message (its body is the outbox envelope)."""
    if public:
        env = event.envelope
        data = envelope(event.event_id, event.type, datetime.fromisoformat(env["created_at"]),
                        _public_payload(env.get("data"), subject_id))
    else:
        data = event.body
    return f"id: {event.event_id}\nevent: {event.type}\ndata: {data}\n\n"


async def _read(sessions: async_sessionmaker[AsyncSession], where: Any, after: int
                ) -> list[OutboxEvent]:
    async with one_read(sessions) as session:
        return list((await session.execute(
            select(OutboxEvent).where(where, OutboxEvent.id > after)
            .order_by(OutboxEvent.id).limit(BATCH)
        )).scalars())


class _Unsent:
    """Which of a stream's outbox rows are still to send. An id is taken at INSERT and seen at
    COMMIT, so on PostgreSQL a row can appear below one already sent (found from outside: the
    stream read ``id > last sent`` and never sent an event whose transaction committed just
    after a later one's). Each poll reads the new rows, above ``top`` (the highest id sent);
    ``floor`` is the highest id below which every row is committed or gone for good
    (:func:`~satvault.db.sequence_snapshot`, checked at each read without waiting). When it
    moves up, the range it passed is read once more for rows that committed late, by id
    first, and those not in ``sent`` (the ids sent above the floor) are sent. A transaction
    left open for long (a backup's) keeps the floor still while the stream goes on: the
    cost stays one read per poll (found from outside: the sent ids passed to the database
    made every poll compare each row with each of them). On SQLite a writer holds the write
    lock from its first statement, so ids commit in order and the floor is simply ``top``."""

    def __init__(self, after: int) -> None:
        self.floor = self.top = after
        self.sent: set[int] = set()
        self.ordered: bool | None = None  # ids commit in order (SQLite); None: not known yet
        self._mark: tuple[int, frozenset[str]] | None = None

    async def read(self, sessions: async_sessionmaker[AsyncSession], where: Any
                   ) -> list[OutboxEvent]:
        async with one_read(sessions) as session:
            # On PostgreSQL autocommit statements, each its own snapshot: only their order
            # matters (the sequence before the open transactions, both before the rows).
            if self.ordered is None:
                self.ordered = session.get_bind().dialect.name != "postgresql"
            settled = None if self.ordered else await self._settled(session)
            late: list[OutboxEvent] = []
            if settled is not None and settled > self.floor:
                # Every row up to ``settled`` committed before this read began: one look at
                # the range for those that came late, then the floor moves past it.
                upto = min(settled, self.top)
                ids = (await session.execute(select(OutboxEvent.id).where(
                    where, OutboxEvent.id > self.floor, OutboxEvent.id <= upto))).scalars()
                missed = sorted(set(ids) - self.sent)
                if missed:
                    late = list((await session.execute(select(OutboxEvent).where(
                        OutboxEvent.id.in_(missed)).order_by(OutboxEvent.id))).scalars())
                self.floor = upto
                self.sent = {i for i in self.sent if i > self.floor}
            rows = list((await session.execute(
                select(OutboxEvent).where(where, OutboxEvent.id > self.top)
                .order_by(OutboxEvent.id).limit(BATCH))).scalars())
        return late + rows

    async def _settled(self, session: AsyncSession) -> int | None:
        """The last value of the sequence noted at an earlier read, once every transaction
        open then has ended (None until then); a new one is noted when the last is used."""
        last, open_now = await sequence_snapshot(session, "outbox_events", "id")
        settled = None
        if self._mark is not None and not (self._mark[1] & open_now):
            settled, self._mark = self._mark[0], None
        if self._mark is None:
            self._mark = (last, open_now)
        return settled

    def done(self, event_id: int) -> None:
        self.top = max(self.top, event_id)
        if self.ordered:
            self.floor = self.top
        elif event_id > self.floor:
            self.sent.add(event_id)


async def _events(sessions: async_sessionmaker[AsyncSession], where: Any, after: int, *,
                  public: bool, poll: float, heartbeat: float) -> AsyncIterator[str]:
    """The outbox mode: poll the outbox."""
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    last_sent = time.monotonic()
    unsent = _Unsent(after)
    while True:
        rows = await unsent.read(sessions, where)
        for row in rows:
            yield _frame(row, public=public)
            unsent.done(row.id)
        if rows:
            last_sent = time.monotonic()
            if len(rows) >= BATCH:  # a late row or two may come on top
                continue
        await notifier.wait(poll)
        if time.monotonic() - last_sent >= heartbeat:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()


async def _live_events(feed: LiveFeed, match: Callable[[StreamEvent], bool],
                       sessions: async_sessionmaker[AsyncSession], where: Any, after: int, *,
                       public: bool, subject_id: str, heartbeat: float, poll: float
                       ) -> AsyncIterator[str]:
    """The NATS mode: events from the process's subscriber to the stream, after one read of
    what was missed from the outbox."""
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    try:
        listener = await feed.listen(match)  # first: nothing relayed from now on is missed
    except StreamUnavailable as exc:
        log.warning("live_updates_from_outbox", error=str(exc),
                    note="NATS unreachable: this stream polls the outbox")
        async for chunk in _events(sessions, where, after, public=public, poll=poll,
                                   heartbeat=heartbeat):
            if not chunk.startswith("retry:"):
                yield chunk
        return
    try:
        resume = after  # the client has everything up to here
        caught_up: set[int] = set()  # sent from the outbox: skip when the stream brings them

        async def catch_up() -> AsyncIterator[str]:
            nonlocal after
            while True:
                rows = await _read(sessions, where, after)
                for row in rows:
                    caught_up.add(row.id)
                    after = row.id
                    yield _frame(row, public=public)
                if len(rows) < BATCH:
                    return

        async for chunk in catch_up():
            yield chunk
        floor = after  # the highest id sent from the outbox
        while True:
            event = await listener.next(heartbeat)
            if listener.overflowed:  # too slow for the feed: the outbox has what was dropped
                listener.recovered()
                async for chunk in catch_up():
                    yield chunk
                floor = after
                continue
            if event is None:
                if not feed.healthy:  # NATS gave up: what was missed is in the outbox
                    await feed.revive()
                    async for chunk in catch_up():
                        yield chunk
                    floor = after
                yield ": keep-alive\n\n"
                continue
            if event.event_id <= resume or event.event_id in caught_up:
                continue  # the client has it already
            if event.event_id > floor:
                # The stream is in outbox id order: no copy of an outbox-read event is to
                # come. (One at or below ``floor`` not read from the outbox was committed
                # after the read, below a later id: it is sent, not lost.)
                caught_up.clear()
            yield _stream_frame(event, public=public, subject_id=subject_id)
            after = max(after, event.event_id)
    finally:
        listener.close()


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
        async with one_read(sessions) as session:
            known = (await session.execute(select(OutboxEvent.id).where(where).limit(1))).first()
        if known is None:
            raise NotFound(f"invoice {invoice_id!r} not found")
        public, after = True, after or 0
    else:
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

        return await wallet_stream(sessions, principal, wallet_id, after,
                                   feed=request.app.state.live, allowed=allowed)
    return _response(sessions, where, after, public=public, feed=request.app.state.live,
                     invoice_id=invoice_id)


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


def _response(sessions: async_sessionmaker[AsyncSession], where: Any, after: int, *,
              public: bool, feed: LiveFeed | None, invoice_id: str | None = None,
              wallet_id: str | None = None, allowed: Allowed | None = None
              ) -> StreamingResponse:
    """The stream's body: the outbox polled (embedded default), or the process's subscriber
    to the event stream (event_stream = "nats") after one read of what was missed."""
    body: AsyncIterator[str]
    if feed is None:
        body = _events(sessions, where, after, public=public, poll=POLL_SECONDS,
                       heartbeat=HEARTBEAT_SECONDS)
    else:
        prefix = feed.stream.settings.prefix
        match: Callable[[StreamEvent], bool]
        if invoice_id is not None:
            subject = subject_for(prefix, "invoice", invoice_id)
            match = lambda e: e.subject == subject  # noqa: E731
        else:
            match = lambda e: e.wallet_id == wallet_id  # noqa: E731
        body = _live_events(feed, match, sessions, where, after, public=public,
                            subject_id=invoice_id or "", heartbeat=HEARTBEAT_SECONDS,
                            poll=POLL_SECONDS)
    if allowed is not None:
        body = _while_allowed(body, allowed)
    return StreamingResponse(
        body, media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def wallet_stream(sessions: async_sessionmaker[AsyncSession], principal: Principal,
                        wallet_id: str, after: int | None, *,
                        feed: LiveFeed | None, allowed: Allowed) -> StreamingResponse:
    """A wallet's full events for a caller with ``wallet:read`` that sees the wallet, from
    ``after`` (None: from now), for as long as ``allowed`` says the caller still may (its
    key, token or session asked again). The API's stream, and the merchant dashboard's
    (whose principal comes from the signed-in session)."""
    if not principal.has("wallet:read"):
        raise Forbidden("this API key lacks the 'wallet:read' scope")
    where = OutboxEvent.wallet_id == wallet_id
    async with sessions() as session:
        await visible_wallet(session, principal, wallet_id)
        if after is None:
            after = int((await session.execute(
                select(func.coalesce(func.max(OutboxEvent.id), 0)).where(where)
            )).scalar_one())
    return _response(sessions, where, after, public=False, feed=feed, wallet_id=wallet_id,
                     allowed=allowed)
