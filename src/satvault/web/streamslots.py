"""How many event streams may stay open: per client address and per process.

The rate limits (:mod:`satvault.web.ratelimit`) bound how fast streams are *opened*; a
stream then stays open for as long as its client likes. :class:`StreamSlots` bounds how many
are open at once: ``streams_per_address`` per client address (counted as the rate limits
count it: the socket peer, or the client a trusted proxy names, an IPv6 client by its /64)
and ``streams_max`` in this process. One more is refused with a 429 problem
(``too-many-streams``) and ``Retry-After``; a stream gives its slot back when it ends,
whatever ends it (the client leaving, the server stopping, an error).

The process's total is its own: it protects this process's sockets and memory. The
per-address count is shared by every API process when the rate limits live in Redis
(``rate_limit_storage = redis://…``; otherwise ``serve --workers N`` lets an address have
N times as many): one sorted set per address whose members are the open streams' slots,
each scored with its expiry. A process refreshes the expiry of its slots every third of
:data:`SLOT_SECONDS` while their streams live, and removes a slot when its stream ends; the
slots of a process that died (no refresh, no removal) stop counting once they expire. The
process always counts per address in memory as well, so when Redis fails the caps still
hold per process (the failure is logged; streams are not refused for it, as rate limits are
not).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from satvault.config import Settings
from satvault.logs import get_logger
from satvault.web.problems import problem
from satvault.web.ratelimit import Networks, client_address, parse_networks

__all__ = [
    "RETRY_AFTER_SECONDS",
    "SLOT_SECONDS",
    "Slot",
    "StreamSlots",
    "TooManyStreams",
    "install_stream_slots",
]

log = get_logger(__name__)

# How long a slot in Redis outlives its last refresh: how long a dead process's streams
# still count against their addresses.
SLOT_SECONDS = 60.0
# What a refused client is told to wait: a slot frees when a stream ends, which nobody can
# foresee; the checkout page polls the invoice's status meanwhile.
RETRY_AFTER_SECONDS = 30

# Drop the expired slots, then add one if fewer than the cap are left (the server's clock
# for every process: theirs may differ). KEYS[1]: the address's set; ARGV: cap, member,
# life in ms. 1 if taken.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# Push back the expiry of slots still open. KEYS: their sets; ARGV: life in ms, then one
# member per key.
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local life = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + life, ARGV[i + 1])
  redis.call('PEXPIRE', key, life)
end
return #KEYS
"""


class TooManyStreams(Exception):
    """A stream refused: its address, or this process, has as many open as it may."""

    def __init__(self, detail: str, *, public: bool) -> None:
        super().__init__(detail)
        self.public = public


@dataclass(eq=False)
class Slot:
    """One open stream's place: its address and, when shared, its member in Redis."""

    address: str
    member: str | None = None
    released: bool = False


class StreamSlots:
    """The open streams of one app (``app.state.stream_slots``); see the module docstring."""

    def __init__(self, *, per_address: int, total: int, trusted: Networks = (),
                 redis_url: str | None = None, prefix: str = "satvault") -> None:
        self.per_address, self.total, self._trusted = per_address, total, trusted
        self._prefix = prefix
        self._counts: Counter[str] = Counter()
        self._slots: set[Slot] = set()
        self._token = secrets.token_hex(8)  # this process's slots in Redis
        self._serial = 0
        self._refresher: asyncio.Task[None] | None = None
        self._forgetting: set[asyncio.Task[None]] = set()
        self.redis: Any = None
        if redis_url is not None:
            import redis.asyncio

            # Short timeouts: a stuck Redis costs a stream's opening a second, no more.
            self.redis = redis.asyncio.Redis.from_url(
                redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamSlots:
        shared = settings.rate_limit_storage != "memory"
        return cls(per_address=settings.streams_per_address, total=settings.streams_max,
                   trusted=parse_networks(settings.rate_limit_trusted_proxies),
                   redis_url=settings.rate_limit_storage if shared else None,
                   prefix=settings.rate_limit_key_prefix)

    @property
    def open(self) -> int:
        """How many streams of this process hold a slot."""
        return len(self._slots)

    def address(self, request: Request) -> str:
        return client_address(request, self._trusted)

    def _key(self, address: str) -> str:
        return f"{self._prefix}/streams/{address}"

    async def take(self, request: Request, *, public: bool) -> Slot:
        """A slot for one more stream from ``request``'s client, or :class:`TooManyStreams`.
        ``public``: the refusal carries the headers of an unauthenticated answer."""
        address = self.address(request)
        if self._counts[address] >= self.per_address:
            raise self._refusal(address, public)
        if len(self._slots) >= self.total:
            log.warning("streams_refused", scope="process", open=len(self._slots))
            raise TooManyStreams(
                f"this server has as many open event streams as it keeps ({self.total}); "
                f"retry after {RETRY_AFTER_SECONDS} s", public=public)
        slot = Slot(address)
        # Counted before the first await: concurrent openings see each other.
        self._counts[address] += 1
        self._slots.add(slot)
        if self.redis is not None:
            self._serial += 1
            member = f"{self._token}:{self._serial}"
            try:
                taken = await self.redis.eval(_TAKE, 1, self._key(address), self.per_address,
                                              member, int(SLOT_SECONDS * 1000))
            except Exception as exc:  # fail open to the process's own count
                log.warning("stream_slots_storage_error", error=str(exc))
                taken = 1
            else:
                slot.member = member
            if not taken:
                slot.member = None  # not in Redis: nothing to remove there
                self.give_back(slot)
                raise self._refusal(address, public)
            self._start_refresher()
        return slot

    def _refusal(self, address: str, public: bool) -> TooManyStreams:
        log.info("streams_refused", scope="address", address=address)
        return TooManyStreams(
            f"too many open event streams from this address (at most {self.per_address}); "
            f"close one, or retry after {RETRY_AFTER_SECONDS} s", public=public)

    def give_back(self, slot: Slot) -> None:
        """The stream of ``slot`` ended. Synchronous (a stream's last act, which may be under
        cancellation): the process's counts at once, the slot in Redis by a task of its own
        (:meth:`close` waits for those)."""
        if slot.released:
            return
        slot.released = True
        self._slots.discard(slot)
        self._counts[slot.address] -= 1
        if self._counts[slot.address] <= 0:
            del self._counts[slot.address]
        if slot.member is not None and self.redis is not None:
            task = asyncio.create_task(self._forget(slot.address, slot.member))
            self._forgetting.add(task)
            task.add_done_callback(self._forgetting.discard)

    async def _forget(self, address: str, member: str) -> None:
        try:
            await self.redis.zrem(self._key(address), member)
        except Exception as exc:  # it expires anyway
            log.warning("stream_slots_storage_error", error=str(exc))

    def _start_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh(), name="stream-slots")

    async def _refresh(self) -> None:
        """Push back the expiry of this process's slots while any is open."""
        while True:
            await asyncio.sleep(SLOT_SECONDS / 3)
            shared = [s for s in self._slots if s.member is not None]
            if not shared:
                return
            try:
                await self.redis.eval(_REFRESH, len(shared),
                                      *[self._key(s.address) for s in shared],
                                      int(SLOT_SECONDS * 1000), *[s.member for s in shared])
            except Exception as exc:  # the slots may lapse: logged, streams go on
                log.warning("stream_slots_refresh_failed", error=str(exc))

    async def close(self) -> None:
        """At shutdown: give back every slot still held, stop refreshing."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for slot in list(self._slots):
            self.give_back(slot)
        if self._forgetting:
            await asyncio.gather(*self._forgetting, return_exceptions=True)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()


def install_stream_slots(app: FastAPI, settings: Settings) -> StreamSlots:
    """Put the app's :class:`StreamSlots` on ``app.state`` and answer its refusals."""
    slots = StreamSlots.from_settings(settings)
    app.state.stream_slots = slots

    async def _refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TooManyStreams)
        resp = problem(429, "too-many-streams", str(exc))
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if exc.public:  # read by the checkout page from anywhere, like the stream itself
            resp.headers["Access-Control-Allow-Origin"] = "*"
        return resp

    app.add_exception_handler(TooManyStreams, _refused)
    return slots
