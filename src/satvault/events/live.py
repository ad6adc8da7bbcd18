"""Live updates from the event stream (``event_stream = "nats"``): one JetStream subscriber per
process, fanned out to the connected server-sent-event streams.

:class:`LiveFeed` follows ``<prefix>.>`` from the moment it starts (an ordered ephemeral
consumer, :meth:`satvault.events.jetstream.JetStream.follow`) and hands each message to every
:class:`Listener` whose filter accepts it. A listener is one connected stream; its filter is
the stream's authorization filter (one invoice's subject, or the events of one wallet, named in
the message's ``Satvault-Wallet-Id`` header as in the outbox's ``wallet_id`` column). Nothing
here reads the database: with a thousand open streams the database sees no polling at all.

Each listener has a bounded queue. A stream too slow to keep up does not hold the others back:
its queue is dropped and the listener marked ``overflowed``; the stream then catches up from
the outbox (the source of truth) and carries on. The feed connects on the first listener (an
API process nobody streams from never talks to NATS); if NATS cannot be reached, the caller
falls back to reading the outbox. If the client gives the connection up later (NATS down for
longer than its reconnection attempts), the streams notice at their next heartbeat, read what
they missed from the outbox and :meth:`LiveFeed.revive` the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from satvault.events.errors import StreamUnavailable
from satvault.events.jetstream import JetStream, StreamEvent
from satvault.logs import get_logger

__all__ = ["Listener", "LiveFeed"]

log = get_logger(__name__)

Match = Callable[[StreamEvent], bool]


class Listener:
    """One connected stream's share of the feed: the events its filter accepted, in stream
    order, until it is closed."""

    def __init__(self, feed: LiveFeed, match: Match, size: int) -> None:
        self._feed = feed
        self.match = match
        # None: a wake-up for a stream waiting while its listener overflowed.
        self.queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue(maxsize=size)
        self.overflowed = False

    def offer(self, event: StreamEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # The stream catches up from the outbox instead; one waiting for its next event
            # wakes now, not at its heartbeat.
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def next(self, timeout: float) -> StreamEvent | None:
        """The next event, or None after ``timeout`` seconds without one (or on overflow)."""
        if self.overflowed:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def recovered(self) -> None:
        """The stream caught up from the outbox: take events from the feed again."""
        self.overflowed = False
        while not self.queue.empty():  # the wake-up, if it was not taken
            self.queue.get_nowait()

    def close(self) -> None:
        self._feed._listeners.discard(self)


class LiveFeed:
    """The process's one subscriber to the event stream (see the module's docstring)."""

    def __init__(self, stream: JetStream, *, queue_size: int = 1000) -> None:
        self.stream = stream
        self.queue_size = queue_size
        self._listeners: set[Listener] = set()
        self._stop: Callable[[], Awaitable[None]] | None = None
        self._lock = asyncio.Lock()
        self.received = 0

    @property
    def following(self) -> bool:
        return self._stop is not None

    @property
    def healthy(self) -> bool:
        """Following, over a connection the client has not given up on (while it reconnects
        it is still healthy: the ordered consumer resumes after the last message it saw)."""
        return self._stop is not None and not self.stream.closed

    async def revive(self) -> bool:
        """After the connection was given up: follow again (from now on; what was missed
        meanwhile, the streams read from the outbox). Whether the feed is healthy."""
        async with self._lock:
            if self.healthy:  # (another stream revived it meanwhile)
                return True
            stop, self._stop = self._stop, None
            if stop is not None:
                with contextlib.suppress(Exception):
                    await stop()
            await self.stream.close()
            try:
                await self._follow()
            except StreamUnavailable as exc:
                log.warning("live_feed_down", error=str(exc))
            return self.healthy

    async def _start(self) -> None:
        async with self._lock:
            await self._follow()

    async def _follow(self) -> None:  # under the lock
        if self._stop is not None:
            return
        await self.stream.connect()
        await self.stream.ensure_stream()
        self._stop = await self.stream.follow(self._dispatch)
        log.info("live_feed_following", stream=self.stream.settings.stream)

    async def _dispatch(self, event: StreamEvent) -> None:
        self.received += 1
        for listener in tuple(self._listeners):
            if listener.match(event):
                listener.offer(event)

    async def listen(self, match: Match) -> Listener:
        """A listener receiving, from now on, every event ``match`` accepts (connects the
        feed first if needed; :class:`~satvault.events.errors.StreamUnavailable` if NATS
        cannot be reached)."""
        await self._start()
        listener = Listener(self, match, self.queue_size)
        self._listeners.add(listener)
        return listener

    async def close(self) -> None:
        self._listeners.clear()
        stop, self._stop = self._stop, None
        if stop is not None:
            with contextlib.suppress(Exception):
                await stop()
        await self.stream.close()
