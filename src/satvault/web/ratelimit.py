"""Rate limits at the HTTP edge: budgets per client address and per API key, kept by the
``limits`` library, answered with 429 problem+json and ``Retry-After``.

Five budgets, each a ``limits`` string of one or more windows (``"10/minute;30/hour"``; a
request must fit every window, so a client that keeps going meets the longer ones: the
penalty grows with persistence):

* ``auth-address`` and ``auth-key``: **failed** authentications (no key, a malformed one, an
  unknown or revoked one, a wrong secret) per client address and per key id named in the
  token. A request from an address, or naming a key id, that has used its budget is refused
  with 429 *before* the database is asked, until the window moves on; unless it carries a
  key verified before (a SHA-256 of each verified key is kept in the storage for longer
  than the longest failure window): somebody else's failures, from a shared address or
  against a known key id, must not lock a key's owner out.
* ``public``: every unauthenticated endpoint (checkout pages, QR codes, LNURL payRequest and
  withdrawRequest, the event stream, health) per client address.
* ``public-create``: unauthenticated endpoints that make something (a node invoice behind a
  Lightning Address callback, an LNURL-auth challenge or login, an LNURL-withdraw
  redemption) per client address.
* ``create``: object creation through the API (stores, invoices, refunds, deposits,
  withdrawals, vouchers, Lightning Addresses, webhooks, redeliveries) per API key, and
  through the dashboard's forms that make the same things, per web session
  (``satvault.web.pages.deps.PageCreateLimit``).

The client address is the socket peer; ``X-Forwarded-For`` counts only when the peer is one
of ``rate_limit_trusted_proxies``, and then the address is the right-most entry that is not
one of them (the one our own proxy wrote). An IPv6 client counts by its /64.

Budgets live in process memory by default, which is per process: ``satvault serve --workers
N`` with memory storage gives each process its own budget (:class:`LocalMemoryStorage`,
``limits``' memory storage with its expiry done inline). A ``redis://`` storage URL makes
every process share one. If that storage fails mid-flight the request is served and a
warning logged: a Redis outage must not take payments down with it.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import math
import re
import time
from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.memory import Entry
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError

from satvault.accounts.security import parse_token
from satvault.config import Settings
from satvault.logs import get_logger
from satvault.web.deps import CurrentPrincipal
from satvault.web.problems import as_page, problem

__all__ = ["CreateLimit", "EdgeLimiter", "LocalMemoryStorage", "PublicCreateLimit",
           "PublicLimit", "RateLimited", "client_address", "install_rate_limits",
           "parse_networks"]

log = get_logger(__name__)
T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

Budget = Literal["auth-address", "auth-key", "public", "public-create", "create"]
_STRATEGIES: dict[str, type[RateLimiter]] = {
    "moving-window": MovingWindowRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Unauthenticated answers may be read by browser wallets on other origins (LUD-01).
_PUBLIC_HEADERS = {"Access-Control-Allow-Origin": "*"}


class RateLimited(Exception):
    """A budget is used up; ``retry_after`` whole seconds until the next request fits."""

    def __init__(self, budget: Budget, retry_after: int) -> None:
        super().__init__(f"too many requests; retry after {retry_after} s")
        self.budget = budget
        self.retry_after = retry_after


def parse_networks(text: str) -> Networks:
    """Comma-separated addresses or CIDR blocks."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False)
                 for part in text.split(",") if part.strip())


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _bucket(ip: IPAddress) -> str:
    """An IPv6 client counts by its /64, which one subscriber usually holds whole (else a
    single host could take a fresh budget per address); an IPv4-mapped one as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_address(request: Request, trusted: Networks) -> str:
    """Who is counted: the socket peer, or the client a trusted proxy names (the right-most
    ``X-Forwarded-For`` entry that is not one of ``trusted``), by its bucket."""
    peer = request.client.host if request.client else "unknown"
    ip = _ip(peer)
    if ip is not None and trusted and _is_trusted(ip, trusted):
        ip = _forwarded_client(request, trusted) or ip
    return peer if ip is None else _bucket(ip)


def _forwarded_client(request: Request, trusted: Networks) -> IPAddress | None:
    hops = [hop for header in request.headers.getlist("x-forwarded-for")
            for hop in header.split(",")]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:  # not what a proxy of ours writes: trust only the peer
            return None
        if not _is_trusted(ip, trusted):
            return ip
    return None


def _is_trusted(ip: IPAddress, trusted: Networks) -> bool:
    return any(ip in net for net in trusted)


class LocalMemoryStorage(MemoryStorage):
    """``limits``' in-process storage, the same counters and moving-window lists, without its
    expiry task: that task is started by nearly every call (whenever none is running) and runs
    each key's ``bisect`` through ``asyncio.to_thread``, a thread hand-off per request that
    cost ~0.15 ms of CPU each under load. Expired counters and entries are dropped here
    inline, at most once per ``sweep_every`` seconds; until then a stale entry only takes
    memory (a window is decided by the entries' own times, not by their removal)."""

    def __init__(self, sweep_every: float = 1.0) -> None:
        super().__init__()
        self._sweep_every = sweep_every
        self._next_sweep = 0.0

    def _sweep(self) -> None:
        now = time.time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_every
        for key, events in list(self.events.items()):
            # newest first, so expiries descend: keep those before the first expired one
            keep = bisect.bisect_left(events, -now, key=lambda event: -event.expiry)
            if keep:
                del events[keep:]
            else:
                self.events.pop(key, None)
                self.locks.pop(key, None)
        for key, expiry in list(self.expirations.items()):
            if expiry <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        await self.get(key)
        self._sweep()
        async with self.locks[key]:
            self.storage[key] += amount
            if self.storage[key] == amount:
                self.expirations[key] = time.time() + expiry
        return self.storage.get(key, amount)

    async def decr(self, key: str, amount: int = 1) -> int:
        await self.get(key)
        self._sweep()
        async with self.locks[key]:
            self.storage[key] = max(self.storage[key] - amount, 0)
        return self.storage.get(key, amount)

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        self._sweep()
        async with self.locks[key]:
            events = self.events.setdefault(key, [])
            entry = events[limit - amount] if len(events) > limit - amount else None
            if entry is not None and entry.atime >= time.time() - expiry:
                return False
            events[:0] = [Entry(expiry)] * amount
            return True


class EdgeLimiter:
    """The budgets of one app (``app.state.rate_limiter``) over one ``limits`` storage."""

    def __init__(self, settings: Settings) -> None:
        self.storage_url = settings.rate_limit_storage
        self._prefix = settings.rate_limit_key_prefix
        self._budgets: dict[Budget, list[RateLimitItem]] = {
            "auth-address": parse_many(settings.rate_limit_auth_failures_per_address),
            "auth-key": parse_many(settings.rate_limit_auth_failures_per_key),
            "public": parse_many(settings.rate_limit_public),
            "public-create": parse_many(settings.rate_limit_public_create),
            "create": parse_many(settings.rate_limit_create),
        }
        self._trusted = parse_networks(settings.rate_limit_trusted_proxies)
        # A verified key outlives every failure window, so a lock-out never outlasts it.
        self._marker_life = max(item.get_expiry() for budget in ("auth-address", "auth-key")
                                for item in self._budgets[budget])
        self._pool: Any = None
        storage: Storage
        if self.storage_url == "memory":
            storage = LocalMemoryStorage()
        else:
            import redis.asyncio

            # Our own pool, so shutdown can close it; short timeouts, so a stuck Redis costs
            # a request one second, not a hung worker.
            self._pool = redis.asyncio.ConnectionPool.from_url(
                self.storage_url, socket_timeout=1.0, socket_connect_timeout=1.0)
            options: dict[str, Any] = {"connection_pool": self._pool}
            storage = RedisStorage(self.storage_url, implementation="redispy",
                                   key_prefix=self._prefix, wrap_exceptions=True, **options)
        self.storage = storage
        self._strategy = _STRATEGIES[settings.rate_limit_strategy](storage)

    # -------------------------------------------------------------------- the mechanics

    async def _over(self, budget: Budget, ident: str) -> RateLimited | None:
        """Whether ``ident`` has used ``budget`` (consuming nothing)."""
        waits = []
        for item in self._budgets[budget]:
            if not await self._strategy.test(item, self._prefix, budget, ident):
                waits.append(await self._retry_after(item, budget, ident))
        return RateLimited(budget, max(waits)) if waits else None

    async def _take(self, budget: Budget, ident: str) -> RateLimited | None:
        """Spend one unit of ``budget`` for ``ident``; the refusal if it does not fit."""
        for item in self._budgets[budget]:
            if not await self._strategy.hit(item, self._prefix, budget, ident):
                # Retry-After: until every window has room, not only the first one tried.
                return (await self._over(budget, ident)
                        or RateLimited(budget, await self._retry_after(item, budget, ident)))
        return None

    async def _retry_after(self, item: RateLimitItem, budget: Budget, ident: str) -> int:
        stats = await self._strategy.get_window_stats(item, self._prefix, budget, ident)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def _guarded(self, coro: Awaitable[T], fallback: T) -> T:
        try:
            return await coro
        except StorageError as exc:  # fail open: see the module docstring
            log.warning("rate_limit_storage_error", error=str(exc.storage_error))
            return fallback

    async def spend(self, budget: Budget, ident: str) -> None:
        """Spend one unit; raises :class:`RateLimited` when the budget is used up."""
        refusal = await self._guarded(self._take(budget, ident), None)
        if refusal is not None:
            raise refusal

    # -------------------------------------------------------------------- authentication

    def client_address(self, request: Request) -> str:
        """Who is counted: the socket peer, or the client a trusted proxy names."""
        return client_address(request, self._trusted)

    @staticmethod
    def _key_id(token: str | None) -> str | None:
        parsed = parse_token(token) if token else None
        return parsed[0] if parsed and _KEY_ID.fullmatch(parsed[0]) else None

    def _marker(self, token: str) -> str:
        return f"{self._prefix}/verified/{hashlib.sha256(token.encode()).hexdigest()}"

    async def before_authentication(self, request: Request, token: str | None) -> None:
        """Refuse, before the database is asked, a caller from an address, or naming a key
        id, that has failed too often; unless its key has been verified before."""
        address, key_id = self.client_address(request), self._key_id(token)
        refusal = await self._guarded(self._over("auth-address", address), None)
        if refusal is None and key_id is not None:
            refusal = await self._guarded(self._over("auth-key", key_id), None)
        if refusal is None:
            return
        # The exact key, verified within the marker's life: its owner, whom somebody else's
        # failures (on a shared address, or naming the key id) must not lock out.
        if token and await self._guarded(self.storage.get(self._marker(token)), 0) > 0:
            return
        raise refusal

    async def authentication_failed(self, request: Request, token: str | None) -> None:
        """Count a failed authentication against the address and the key id it named; log
        the failure that uses a budget up (once per lock-out, not once per refusal)."""
        counted: list[tuple[Budget, str | None]] = [
            ("auth-address", self.client_address(request)), ("auth-key", self._key_id(token))]
        for budget, ident in counted:
            if ident is None:
                continue
            await self._guarded(self._take(budget, ident), None)
            refusal = await self._guarded(self._over(budget, ident), None)
            if refusal is not None:
                log.warning("auth_failures_limited", budget=budget, ident=ident,
                            retry_after=refusal.retry_after)

    async def authentication_succeeded(self, token: str) -> None:
        """Mark the key as verified (a hash of it) for longer than any failure window."""
        marker, life = self._marker(token), self._marker_life

        async def refresh() -> None:
            if (await self.storage.get(marker) > 0
                    and await self.storage.get_expiry(marker) - time.time() > life / 2):
                return
            await self.storage.clear(marker)
            await self.storage.incr(marker, life)

        await self._guarded(refresh(), None)

    # ----------------------------------------------------------------------- life cycle

    async def check(self) -> bool:
        """Whether the storage answers (always true for memory)."""
        try:
            return bool(await self.storage.check())
        except Exception:  # a health probe reports, it does not raise
            return False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()
        timer = getattr(self.storage, "timer", None)  # MemoryStorage's expiry task
        if timer is not None and not timer.done():
            timer.cancel()


# ---------------------------------------------------------------------------- dependencies

def _limiter(request: Request) -> EdgeLimiter | None:
    limiter: EdgeLimiter | None = getattr(request.app.state, "rate_limiter", None)
    return limiter


class _PerAddress:
    """A dependency spending one unit of ``budget`` for the client address."""

    def __init__(self, budget: Literal["public", "public-create"]) -> None:
        self.budget: Literal["public", "public-create"] = budget

    async def __call__(self, request: Request) -> None:
        limiter = _limiter(request)
        if limiter is not None:
            await limiter.spend(self.budget, limiter.client_address(request))


async def _per_key(request: Request, principal: CurrentPrincipal) -> None:
    # The same (cached) principal the route's scope check gets: one authentication.
    limiter = _limiter(request)
    if limiter is not None:
        await limiter.spend("create", principal.key_id)


# For ``dependencies=[...]`` on a router or a route.
PublicLimit = Depends(_PerAddress("public"))
PublicCreateLimit = Depends(_PerAddress("public-create"))
CreateLimit = Depends(_per_key)


def install_rate_limits(app: FastAPI, settings: Settings) -> EdgeLimiter | None:
    """Put the limiter on ``app.state`` (None when switched off) and answer its refusals."""
    limiter = EdgeLimiter(settings) if settings.rate_limit_enabled else None
    app.state.rate_limiter = limiter

    async def _refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RateLimited)
        resp = as_page(request, problem(429, "rate-limited", str(exc)))  # a form's: a page
        resp.headers["Retry-After"] = str(exc.retry_after)
        if exc.budget.startswith("public"):
            resp.headers.update(_PUBLIC_HEADERS)
        return resp

    app.add_exception_handler(RateLimited, _refused)
    return limiter
