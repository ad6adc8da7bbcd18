"""Live updates from the outbox (``event_stream = "outbox"``, the embedded default): one
reader per process, fanned out to the connected server-sent-event streams.

Each open stream used to poll the outbox itself every half second: N streams, N queries per
tick (and on SQLite each took the write lock). :class:`OutboxFeed` reads the outbox once per
tick for all of them, only the rows some listener wants (an invoice's subject, a wallet's
events: ``(subject_type = 'invoice' AND subject_id IN …) OR wallet_id IN …``, both indexed),
and hands each row to the :class:`FeedListener` of every stream whose key it carries. A tick
is :data:`POLL_SECONDS`, or sooner when a transaction of this process that emitted commits
(:data:`~satvault.events.outbox.notifier`). While no stream listens, nothing is read.

Rows are read in commit order as the streams did (:class:`Unsent`: on PostgreSQL an id can
commit after a higher one), over the changing set of keys: a stream joining later reads
what it missed once itself (after registering, so nothing read meanwhile is lost) and skips
what then comes twice; every row the feed hands out is above :attr:`OutboxFeed.floor`, so a
stream forgets the ids it read itself once the floor passes them.

Each listener has a bounded queue: a stream too slow to keep up has its queue dropped and is
marked ``overflowed``; it then catches up from the outbox and carries on (as with
:class:`satvault.events.live.LiveFeed`, the same shape over NATS).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.db import one_read, sequence_fence, sequence_snapshot, still_open
from satvault.events.models import OutboxEvent
from satvault.events.outbox import notifier
from satvault.logs import get_logger

__all__ = ["BATCH", "POLL_SECONDS", "FeedListener", "JoinMark", "Key", "OutboxFeed", "Unsent",
           "key_filter"]

log = get_logger(__name__)

POLL_SECONDS = 0.5
BATCH = 500
# A stream's key: ("invoice", invoice id) or ("wallet", wallet id).
Key = tuple[str, str]


def key_filter(key: Key) -> ColumnElement[bool]:
    """The outbox rows of one key: the invoice's own subject, or the wallet's events."""
    kind, ident = key
    if kind == "invoice":
        return (OutboxEvent.subject_type == "invoice") & (OutboxEvent.subject_id == ident)
    return OutboxEvent.wallet_id == ident


def _keys_filter(keys: set[Key]) -> ColumnElement[bool]:
    invoices = sorted(i for kind, i in keys if kind == "invoice")
    wallets = sorted(i for kind, i in keys if kind == "wallet")
    parts: list[ColumnElement[bool]] = []
    if invoices:
        parts.append((OutboxEvent.subject_type == "invoice")
                     & OutboxEvent.subject_id.in_(invoices))
    if wallets:
        parts.append(OutboxEvent.wallet_id.in_(wallets))
    return or_(*parts) if parts else false()


class Unsent:
    """Which outbox rows are still to read. An id is taken at INSERT and seen at COMMIT, so on
    PostgreSQL a row can appear below one already read (found from outside: a stream read
    ``id > last sent`` and never sent an event whose transaction committed just after a later
    one's). Each read takes the new rows, above ``top`` (the highest id read); ``floor`` is
    the highest id below which every row is committed or gone for good
    (:func:`~satvault.db.sequence_snapshot`, checked at each read without waiting). When it
    moves up, the range it passed is read once more for rows that committed late, by id
    first, and those not in ``sent`` (the ids read above the floor) are returned. A
    transaction left open for long (a backup's) keeps the floor still while reading goes on:
    the cost stays one read per tick (found from outside: the sent ids passed to the database
    made every poll compare each row with each of them). On SQLite a writer holds the write
    lock from its first statement, so ids commit in order and the floor is simply ``top``."""

    def __init__(self, after: int) -> None:
        self.floor = self.top = after
        self.sent: set[int] = set()
        self.ordered: bool | None = None  # ids commit in order (SQLite); None: not known yet
        self._mark: tuple[int, frozenset[str]] | None = None
        # PostgreSQL: the transactions open at the latest look, and how many looks so far.
        self.open_now: frozenset[str] = frozenset()
        self.looks = 0

    async def read(self, sessions: async_sessionmaker[AsyncSession], where: Any, *,
                   limit: int = BATCH) -> list[OutboxEvent]:
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
                .order_by(OutboxEvent.id).limit(limit))).scalars())
        for row in late + rows:
            self.done(row.id)
        return late + rows

    async def _settled(self, session: AsyncSession) -> int | None:
        """The last value of the sequence noted at an earlier read, once every transaction
        open then has ended (None until then); a new one is noted when the last is used."""
        last, open_now = await sequence_snapshot(session, "outbox_events", "id")
        self.open_now, self.looks = open_now, self.looks + 1
        settled = None
        if self._mark is not None and not still_open(self._mark[1], open_now):
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


@dataclass(frozen=True)
class JoinMark:
    """See :meth:`OutboxFeed.join_mark`."""

    last: int
    open: frozenset[str]
    looks: int


class FeedListener:
    """One connected stream's share of the feed: the rows of its key, until it is closed."""

    def __init__(self, feed: OutboxFeed, key: Key, size: int) -> None:
        self._feed = feed
        self.key = key
        # None: a wake-up for a stream waiting while its listener overflowed.
        self.queue: asyncio.Queue[OutboxEvent | None] = asyncio.Queue(maxsize=size)
        self.overflowed = False
        # The lowest id dropped since the overflow: a row that committed late can be below
        # what the stream has sent, where reading on from there would not find it.
        self.dropped_from: int | None = None

    def _drop(self, event_id: int) -> None:
        if self.dropped_from is None or event_id < self.dropped_from:
            self.dropped_from = event_id

    def offer(self, row: OutboxEvent) -> None:
        if self.overflowed:
            self._drop(row.id)
            return
        try:
            self.queue.put_nowait(row)
        except asyncio.QueueFull:
            self.overflow(row.id)  # the stream catches up from the outbox instead

    def overflow(self, event_id: int) -> None:
        """The stream is to catch up from the outbox, from ``event_id`` on: what is queued is
        dropped, and a stream waiting for its next row wakes (found checking the streams'
        fix: one woken by a row that an overflow then took back slept until its heartbeat)."""
        self.overflowed = True
        self._drop(event_id)
        while not self.queue.empty():
            row = self.queue.get_nowait()
            if row is not None:
                self._drop(row.id)
        self.queue.put_nowait(None)

    async def next(self, timeout: float) -> OutboxEvent | None:
        """The next row, or None after ``timeout`` seconds without one (or on overflow)."""
        if self.overflowed:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def recovered(self) -> int | None:
        """Take rows from the feed again; the lowest id dropped meanwhile, from which the
        stream reads what it has not sent."""
        dropped, self.dropped_from, self.overflowed = self.dropped_from, None, False
        while not self.queue.empty():  # the wake-up, if it was not taken
            self.queue.get_nowait()
        return dropped

    def close(self) -> None:
        self._feed._remove(self)


class OutboxFeed:
    """The process's one reader of the outbox for live updates (see the module docstring)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *,
                 poll: float | None = None, queue_size: int = 1000) -> None:
        self.sessions = sessions
        self.poll = poll  # None: POLL_SECONDS
        self.queue_size = queue_size
        self._listeners: dict[Key, set[FeedListener]] = {}
        self._unsent: Unsent | None = None
        self._floor = self._start = 0
        self._exact_start = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def floor(self) -> int:
        """Every row up to this id is committed, and the feed has handed out those of the
        listeners' keys (a stream that has taken them from its queue has had them all);
        every row it hands out from now on is above it. It moves once a read's rows are
        handed out, not while the read runs (found checking the streams' fix: a stream that
        saw the floor move before the late rows it passed were in its queue counted them as
        sent)."""
        return self._floor

    def ended(self, mark: JoinMark) -> bool:
        """Whether every transaction open at ``mark`` has ended, by a look of the feed's
        taken after it (PostgreSQL; the feed looks at each read)."""
        u = self._unsent
        return u is not None and u.looks >= mark.looks + 2 \
            and not still_open(mark.open, u.open_now)

    async def join_mark(self) -> JoinMark | None:
        """For a stream that has read what it missed (PostgreSQL; None on SQLite, where ids
        commit in order): the sequence's last value and the transactions open now. A row of
        the stream's up to that value that its read did not see committed late; once those
        transactions have ended (:meth:`ended`) it is in the outbox, and the stream looks for
        it once. (The feed may have started reading above it: its start point is a fence
        waited for only briefly.)"""
        if self.sessions.kw["bind"].dialect.name != "postgresql":
            return None
        looks = self._unsent.looks if self._unsent is not None else 0
        async with one_read(self.sessions) as session:
            last, open_now = await sequence_snapshot(session, "outbox_events", "id")
        return JoinMark(last, open_now, looks)

    async def listen(self, key: Key) -> FeedListener:
        """A listener receiving every row of ``key`` the feed reads from now on (the feed
        starts reading if it was idle)."""
        async with self._lock:
            if self._unsent is None:  # once per process: where reading starts
                start, self._exact_start = await self._start_point()
                self._unsent = Unsent(start)
                self._floor = self._start = start
        listener = FeedListener(self, key, self.queue_size)
        self._listeners.setdefault(key, set()).add(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="outbox-feed")
        return listener

    async def _start_point(self) -> tuple[int, bool]:
        """Where reading starts, and whether every row below it is committed (or gone):
        PostgreSQL's fence, briefly waited for; failing it, and on SQLite (ids commit in
        order, so it is exact there), the highest id committed."""
        postgres = self.sessions.kw["bind"].dialect.name == "postgresql"
        if postgres:
            fence = await sequence_fence(self.sessions, (("outbox_events", "id"),),
                                         timeout=1.0)
            if fence is not None:
                return fence[0], True
            log.warning("outbox_feed_started_behind_a_transaction",
                        note="a transaction that wrote outlived the start's fence: streams "
                             "opening from now look below the start until it has ended")
        async with one_read(self.sessions) as session:
            return int((await session.execute(
                select(func.coalesce(func.max(OutboxEvent.id), 0)))).scalar_one()), \
                not postgres

    @property
    def exact(self) -> bool:
        """Whether every row up to :attr:`floor` is committed: true unless reading started at
        the highest id committed while a transaction that may hold a lower one was open, and
        the floor has not moved since (it moves only once every such transaction ended)."""
        return self._exact_start or self._floor > self._start

    def _remove(self, listener: FeedListener) -> None:
        group = self._listeners.get(listener.key)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.key]

    async def _run(self) -> None:
        """Read for the listeners while there are any. The first read waits a tick: a new
        stream reads what it missed itself."""
        assert self._unsent is not None
        full = False
        while self._listeners:
            if not full:
                await notifier.wait(POLL_SECONDS if self.poll is None else self.poll)
                if not self._listeners:
                    return
            wanted, skipped = self._wanted()
            before = self._unsent.floor
            try:
                rows = await self._unsent.read(self.sessions, _keys_filter(wanted))
            except Exception as exc:  # the database away for a moment: try again next tick
                log.warning("outbox_feed_read_failed", error=str(exc))
                full = False
                continue
            for row in rows:
                self._dispatch(row)
            for listener in skipped:
                if not listener.overflowed:
                    # It caught up from the outbox while this read, which skipped its key,
                    # ran: a row of its that committed after its catch-up read and that this
                    # read passed the floor over was handed to no one. It looks again.
                    listener.overflow(before + 1)
            self._floor = self._unsent.floor
            full = len(rows) >= BATCH  # a late row or two may come on top

    def _wanted(self) -> tuple[set[Key], list[FeedListener]]:
        """The keys read for: those of a listener not overflowed. One that is catches up from
        the outbox itself (found from outside: a burst of thousands of events was read here
        only to be dropped, while the stream read it again). It is told that the rows above
        the floor may have been skipped: one that committed late may be below what it sent.
        Also the listeners skipped so."""
        assert self._unsent is not None
        wanted: set[Key] = set()
        skipped: list[FeedListener] = []
        for key, group in self._listeners.items():
            for listener in group:
                if listener.overflowed:
                    listener._drop(self._unsent.floor + 1)
                    skipped.append(listener)
                else:
                    wanted.add(key)
        return wanted, skipped

    def _dispatch(self, row: OutboxEvent) -> None:
        if row.subject_type == "invoice":
            for listener in tuple(self._listeners.get(("invoice", row.subject_id), ())):
                listener.offer(row)
        if row.wallet_id is not None:
            for listener in tuple(self._listeners.get(("wallet", row.wallet_id), ())):
                listener.offer(row)

    async def close(self) -> None:
        self._listeners.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
