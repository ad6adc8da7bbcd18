"""The relay from the outbox to NATS JetStream (``event_stream = "nats"``).

The outbox stays the source of truth: every event is written in the transaction of its
change (:mod:`satvault.events.outbox`). The relay copies it to the stream afterwards, in
outbox id order, one event at a time:

1. **Fence** (PostgreSQL). Ids come from a sequence and are handed out before commit, so a
   transaction may commit id 7 after id 8 is already visible. The relay reads the sequence's
   last value ``L``, waits until every transaction open at that moment has ended, and then
   relays only ids ``<= L``: all of them are committed or gone for good, so a late id is
   never overtaken (the audit sealer's rule). On SQLite a writer holds the database's one
   write lock from its first statement, so ids commit in order and no fence is needed.
2. **Lease.** Only the process holding the singleton workers' lease
   (:mod:`satvault.leases`: a ``worker_leases`` row with an expiry and an epoch, renewed by
   the lease worker) relays; the others stand by. The relay checks the lease before every
   publish, so a holder that lost it stops within one message. No transaction is open, and
   no lock held, while publishing.
3. **Publish** each event to ``<prefix>.<subject_type>.<subject_id>`` with ``Nats-Msg-Id`` =
   its outbox id, awaiting JetStream's acknowledgement before sending the next: stream order
   is outbox order, so order per aggregate holds.
4. **Record.** The cursor (one row of ``event_relay_cursors``) advances to the last
   acknowledged id, conditional on the position it started from, in a short transaction
   **fenced by the lease's epoch**: a deposed holder's write is refused
   (:class:`~satvault.leases.LeaseLost`) and it goes to standby.

A crash between 3 and 4 republishes the same events with the same ids at the next start;
JetStream drops them as duplicates within its duplicate window, so consumers see each event
once. If the lease ran out while its holder was paused in the middle of a publish, that one
message may still go out when it resumes (its next check finds the lease gone): it is an id
the new holder sends too, at its turn, so whichever copy comes second is dropped by the
duplicate window and the stream still holds each event once and in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.db import insert_ignoring, sequence_fence, utcnow
from satvault.events.errors import StreamUnavailable
from satvault.events.jetstream import JetStream, subject_for
from satvault.events.models import EventRelayCursor, OutboxEvent
from satvault.events.outbox import envelope
from satvault.leases import Lease, LeaseLost
from satvault.logs import get_logger

__all__ = ["EventRelay", "RelayStep", "cursor_position"]

log = get_logger(__name__)
cursors_t = cast(Table, EventRelayCursor.__table__)
CURSOR = "nats"
# After the stream was made anew, how far back the relay publishes again (see
# EventRelay._replay_recent): the webhook fan-out and the other consumers are minutes behind
# at worst; what they had not handled of older events is lost with the stream.
REPLAY_SECONDS = 600.0

@dataclass(frozen=True, slots=True)
class RelayStep:
    published: int = 0   # events sent in this step
    duplicates: int = 0  # of which JetStream already had (a republish after a crash)
    position: int = 0    # the cursor after the step
    waiting: bool = False  # the lease is another relay's, or the fence timed out


async def cursor_position(session: AsyncSession, name: str = CURSOR) -> int:
    """The last outbox id the relay published and recorded (0 before the first)."""
    pos = (await session.execute(select(EventRelayCursor.position)
                                 .where(EventRelayCursor.name == name))).scalar_one_or_none()
    return int(pos or 0)


class EventRelay:
    """``lease``: the singleton workers' lease this relay publishes under (None: always, for
    a process that is alone by construction). The relay never takes or renews it itself (the
    lease worker does); it only checks it and writes its cursor through sessions fenced by
    its epoch."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], stream: JetStream, *,
                 lease: Lease | None = None, batch: int = 500, fence_timeout: float = 5.0,
                 name: str = CURSOR, replay_seconds: float = REPLAY_SECONDS) -> None:
        self.sessions = sessions
        self.stream = stream
        self.lease = lease
        self.writes = lease.fenced(sessions) if lease is not None else sessions
        self.batch = batch
        self.fence_timeout = fence_timeout
        self.name = name
        self.replay_seconds = replay_seconds
        self._ready = False
        self._dialect: str | None = None
        # The stream's last sequence as this relay last saw it: a lower one means the stream
        # was made anew (deleted, or lost by a NATS restarted without its storage).
        self._stream_seq = 0

    @property
    def holds(self) -> bool:
        return self.lease is None or self.lease.held

    async def _prepare(self) -> None:
        if self._dialect is None:
            async with self.sessions() as s:
                self._dialect = s.get_bind().dialect.name
        # Again after the client gave its connection up (NATS away for longer than its few
        # reconnection attempts; found from outside: the relay had stayed on the dead
        # connection until serve was restarted, and no event reached the stream meanwhile).
        if not self._ready or self.stream.closed:
            await self.stream.connect()
            await self.stream.ensure_stream()
            self._ready = True
            seq = await self.stream.last_seq()
            if seq < self._stream_seq or (seq == 0 and await self._position() > 0):
                await self._replay_recent()
            self._stream_seq = seq

    async def _replay_recent(self) -> None:
        """The stream was made anew: what it held, and the consumers had not handled yet, is
        gone with it. Move the cursor back to the events of the last ``replay_seconds``, which
        are published again (the webhook fan-out queues a delivery once per webhook and
        event; every consumer is idempotent on the event id). Found from outside: a stream
        deleted twice within seconds lost the events published into it in between, which
        never reached a webhook."""
        position = await self._position()
        since = utcnow() - timedelta(seconds=self.replay_seconds)
        async with self.sessions() as s:
            back = (await s.execute(select(func.max(OutboxEvent.id)).where(
                OutboxEvent.id <= position, OutboxEvent.created_at < since))).scalar()
        back = int(back or 0)
        if back >= position:
            return
        try:
            moved = await self._advance(position, back)
        except LeaseLost:
            self._fenced()
            return
        if moved:
            log.error("event_stream_lost", stream=self.stream.settings.stream,
                      republishing_after=back, up_to=position,
                      note="the stream was made anew: the events of the last "
                      f"{self.replay_seconds:.0f} s are published again; older ones the "
                      "consumers had not handled are not (docs/events.md)")

    async def _fence(self) -> int | None:
        """The highest outbox id below which everything is committed or gone (None: not on
        PostgreSQL, where ids commit in order; -1: a transaction outlived the wait)."""
        if self._dialect != "postgresql":
            return None
        fence = await sequence_fence(self.sessions, (("outbox_events", "id"),),
                                     timeout=self.fence_timeout)
        if fence is None:
            log.warning("event_relay_waiting", note="a transaction outlived the fence's wait")
            return -1
        return fence[0]

    def _insert(self) -> Any:
        return insert_ignoring(self._dialect or "", cursors_t, "name")

    async def _position(self) -> int:
        """The cursor's position, the row created (fenced) if it is the first round."""
        async with self.sessions() as s:
            pos = await cursor_position(s, self.name)
            found = (await s.execute(select(EventRelayCursor.name)
                                     .where(EventRelayCursor.name == self.name))).first()
        if found is None:
            async with self.writes() as s, s.begin():
                await s.execute(self._insert().values(name=self.name, position=0,
                                                      updated_at=utcnow()))
        return pos

    async def _read(self, after: int, upto: int | None) -> list[OutboxEvent]:
        q = select(OutboxEvent).where(OutboxEvent.id > after)
        if upto is not None:
            q = q.where(OutboxEvent.id <= upto)
        async with self.sessions() as s:
            rows = list((await s.execute(q.order_by(OutboxEvent.id).limit(self.batch)))
                        .scalars().all())
            s.expunge_all()
        return rows

    async def _advance(self, old: int, new: int) -> bool:
        """Record ``new`` if the cursor is still at ``old``, in a transaction fenced by the
        lease's epoch (:class:`LeaseLost` if it moved on)."""
        async with self.writes() as s, s.begin():
            done = (await s.execute(
                update(cursors_t)
                .where(cursors_t.c.name == self.name, cursors_t.c.position == old)
                .values(position=new, updated_at=utcnow())
                .returning(cursors_t.c.position))).scalar_one_or_none() is not None
        if not done:
            log.warning("event_relay_cursor_moved", position=new,
                        note="another relay recorded meanwhile")
        return bool(done)

    async def step(self) -> RelayStep:
        """Relay one batch: fence, check the lease, publish, record (fenced)."""
        if not self.holds:
            return RelayStep(waiting=True)
        await self._prepare()
        upto = await self._fence()
        if upto == -1:
            return RelayStep(waiting=True)
        try:
            return await self._relay(upto)
        except LeaseLost:
            self._fenced()
            return RelayStep(waiting=True)
        except StreamUnavailable:
            # The next round connects and sets the stream up again: found from outside, a
            # stream deleted (or lost by a NATS restarted without its storage) under a live
            # connection failed every publish until serve was restarted.
            self._ready = False
            raise

    async def _relay(self, upto: int | None) -> RelayStep:
        position = await self._position()
        events = await self._read(position, upto)
        last, dups, sent = position, 0, 0
        prefix = self.stream.settings.prefix
        lost = False
        try:
            for e in events:
                if not self.holds:  # lost (or no longer sure of) the lease: stop here
                    lost = True
                    break
                body = envelope(e.id, e.type, e.created_at, e.payload).encode()
                seq, dup = await self.stream.publish(
                    subject_for(prefix, e.subject_type, e.subject_id), body,
                    event_id=e.id, type=e.type, wallet_id=e.wallet_id)
                if not dup:
                    if seq <= self._stream_seq:  # made anew since the last publish:
                        self._ready = False  # the next round replays (see _prepare)
                    else:
                        self._stream_seq = seq
                last, sent, dups = e.id, sent + 1, dups + int(dup)
        finally:
            recorded = last > position and await self._record(position, last)
        if dups:
            log.info("event_relay_duplicates", duplicates=dups, note="republished after a "
                     "crash or a lost lease; JetStream dropped them")
        if last > position and not recorded:
            return RelayStep(sent, dups, position, waiting=True)
        return RelayStep(sent, dups, last, waiting=lost)

    async def _record(self, old: int, new: int) -> bool:
        try:
            return await self._advance(old, new)
        except LeaseLost:
            self._fenced()
            return False

    def _fenced(self) -> None:
        if self.lease is not None:
            self.lease.drop()
        log.warning("event_relay_fenced", note="the lease moved on: nothing recorded; the "
                    "new holder republishes from the cursor")

    async def tick(self) -> int:
        """For the worker: relay until caught up (or waiting); how many were sent."""
        total = 0
        while True:
            done = await self.step()
            total += done.published
            if done.waiting or done.published < self.batch:
                return total

    async def close(self) -> None:
        """Disconnect (the lease is the lease worker's to give back)."""
        await self.stream.close()
        self._ready = False
