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
2. **Lease.** One row of ``event_relay_cursors`` holds the last relayed id and a lease
   (``owner`` until ``lease_until``). A relay claims or renews it in a short transaction and
   publishes only while it holds it; another relay (a second worker process) finds it taken
   and does nothing. No transaction is open, and no lock held, while publishing.
3. **Publish** each event to ``<prefix>.<subject_type>.<subject_id>`` with ``Nats-Msg-Id`` =
   its outbox id, awaiting JetStream's acknowledgement before sending the next: stream order
   is outbox order, so order per aggregate holds.
4. **Record.** The cursor advances to the last acknowledged id (conditional on the lease and
   on the position it started from) in a short transaction.

A crash between 3 and 4 republishes the same events with the same ids at the next start;
JetStream drops them as duplicates within its duplicate window, so consumers see each event
once. If a lease ran out while its holder was still publishing (a pause longer than the
lease), two relays may publish the same range at once: each sends id *k* only after *k - 1*
was acknowledged, and the duplicate window drops the second copy, so the stream still holds
each event once and in order.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.db import sequence_fence, utcnow
from satvault.events.jetstream import JetStream, subject_for
from satvault.events.models import EventRelayCursor, OutboxEvent
from satvault.events.outbox import envelope
from satvault.kernel.ids import new_id
from satvault.logs import get_logger

__all__ = ["EventRelay", "RelayStep", "cursor_position"]

log = get_logger(__name__)
cursors_t = cast(Table, EventRelayCursor.__table__)
CURSOR = "nats"

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
    def __init__(self, sessions: async_sessionmaker[AsyncSession], stream: JetStream, *,
                 batch: int = 500, lease_seconds: float = 30.0, fence_timeout: float = 5.0,
                 name: str = CURSOR, owner: str | None = None) -> None:
        self.sessions = sessions
        self.stream = stream
        self.batch = batch
        self.lease = timedelta(seconds=lease_seconds)
        self.fence_timeout = fence_timeout
        self.name = name
        self.owner = owner or f"{socket.gethostname()[:40]}:{os.getpid()}:{new_id('rl')[-8:]}"
        self._ready = False
        self._dialect: str | None = None

    async def _prepare(self) -> None:
        if self._dialect is None:
            async with self.sessions() as s:
                self._dialect = s.get_bind().dialect.name
        if not self._ready:
            await self.stream.connect()
            await self.stream.ensure_stream()
            self._ready = True

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
        dialect = postgresql if self._dialect == "postgresql" else sqlite
        return dialect.insert(cursors_t).on_conflict_do_nothing(index_elements=["name"])

    async def _claim(self) -> int | None:
        """Take or renew the lease; the cursor's position, or None if another relay holds it."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            await s.execute(self._insert().values(name=self.name, position=0, owner=None,
                                                  lease_until=None, updated_at=now))
            pos = (await s.execute(
                update(cursors_t)
                .where(cursors_t.c.name == self.name,
                       or_(cursors_t.c.owner.is_(None), cursors_t.c.owner == self.owner,
                           cursors_t.c.lease_until < now))
                .values(owner=self.owner, lease_until=now + self.lease, updated_at=now)
                .returning(cursors_t.c.position))).scalar_one_or_none()
        return None if pos is None else int(pos)

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
        now = utcnow()
        async with self.sessions() as s, s.begin():
            done = (await s.execute(
                update(cursors_t)
                .where(and_(cursors_t.c.name == self.name, cursors_t.c.owner == self.owner,
                            cursors_t.c.position == old))
                .values(position=new, lease_until=now + self.lease, updated_at=now)
                .returning(cursors_t.c.position))).scalar_one_or_none() is not None
        if not done:
            log.warning("event_relay_lease_lost", owner=self.owner, position=new)
        return bool(done)

    async def step(self) -> RelayStep:
        """Relay one batch: fence, claim the lease, publish, record."""
        await self._prepare()
        upto = await self._fence()
        if upto == -1:
            return RelayStep(waiting=True)
        position = await self._claim()
        if position is None:
            return RelayStep(waiting=True)
        events = await self._read(position, upto)
        last, dups, sent = position, 0, 0
        started = time.monotonic()
        prefix = self.stream.settings.prefix
        try:
            for e in events:
                body = envelope(e.id, e.type, e.created_at, e.payload).encode()
                _seq, dup = await self.stream.publish(
                    subject_for(prefix, e.subject_type, e.subject_id), body,
                    event_id=e.id, type=e.type)
                last, sent, dups = e.id, sent + 1, dups + int(dup)
                if time.monotonic() - started > self.lease.total_seconds() / 2:
                    break  # record and renew the lease before it could run out
        finally:
            if last > position:
                await self._advance(position, last)
        if dups:
            log.info("event_relay_duplicates", duplicates=dups, note="republished after a "
                     "crash or a lost lease; JetStream dropped them")
        return RelayStep(sent, dups, last)

    async def tick(self) -> int:
        """For the worker: relay until caught up (or waiting); how many were sent."""
        total = 0
        while True:
            done = await self.step()
            total += done.published
            if done.waiting or done.published < self.batch:
                return total

    async def close(self) -> None:
        """Give the lease back (another relay may take over at once) and disconnect. Both
        are bounded: a lease not given back simply runs out."""
        try:
            async with asyncio.timeout(2.0):
                await self._release()
        except Exception:  # stopping must not hang or fail on this
            log.warning("event_relay_lease_not_released", owner=self.owner)
        finally:
            await self.stream.close()
            self._ready = False

    async def _release(self) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(update(cursors_t)
                            .where(cursors_t.c.name == self.name,
                                   cursors_t.c.owner == self.owner)
                            .values(owner=None, lease_until=None, updated_at=utcnow()))
