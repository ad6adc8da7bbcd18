"""FastAPI dependencies as ``Annotated`` aliases: the session (one transaction per request),
the settings and the authenticated caller."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.service import MONEY_SCOPES, Principal, authenticate_api_key
from satvault.auth.credentials import sealer_for
from satvault.auth.tokens import authenticate_jwt, looks_like_jwt
from satvault.config import Settings
from satvault.kernel.errors import Forbidden, Unauthenticated

if TYPE_CHECKING:
    from satvault.web.ratelimit import EdgeLimiter

__all__ = ["CurrentPrincipal", "IdempotencyKey", "OptionalIdempotencyKey", "PrincipalCache",
           "SessionDep", "SettingsDep", "require_any_scope", "require_scope"]


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session, session.begin():
        yield session


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# scope="function": the transaction commits before the response leaves, so a failed commit
# can never follow a 200.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(_settings)]


async def _principal(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """Authentication is its own short unit of work, never the request's transaction: an
    endpoint that manages its own transactions (idempotent POSTs) must not find the database
    already locked by its own caller (SQLite has one writer). Failures are counted against
    the client address and the key id (web/ratelimit.py): past the budget, a 429 before the
    database is asked. A bearer token shaped like a JWT is an access token from
    ``POST /api/v1/auth/token`` (satvault.auth.tokens), anything else an API key."""
    token, malformed = x_api_key, None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value:
            malformed = "use 'Authorization: Bearer <api key or access token>'"
        token = value
    cache: PrincipalCache | None = getattr(request.app.state, "principals", None)
    if (token and not malformed and cache is not None
            and (known := cache.get(token)) is not None):
        return known
    limiter: EdgeLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        await limiter.before_authentication(request, token)
    try:
        if malformed or not token:
            raise Unauthenticated(malformed or "an API key is required")
        sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
        is_jwt = looks_like_jwt(token)
        async with sessions() as session, session.begin():
            if is_jwt:
                settings = request.app.state.settings
                principal = await authenticate_jwt(
                    session, token, sealer=sealer_for(settings),
                    money_window=timedelta(minutes=settings.auth_money_scope_minutes))
            else:
                principal = await authenticate_api_key(session, token)
    except Unauthenticated:
        if limiter is not None:
            await limiter.authentication_failed(request, token)
        raise
    if limiter is not None:
        await limiter.authentication_succeeded(token)
    # Access tokens are not cached: their revocation (sign-out, refresh reuse, a suspended
    # user) and expiry take effect on the next request.
    if cache is not None and not is_jwt:
        cache.put(token, principal)
    return principal


class PrincipalCache:
    """Verified API keys remembered for ``ttl`` seconds, so a busy client does not cost a
    database round trip (and, on SQLite, a turn at the write lock) per request.

    Entries are keyed by a SHA-256 of the whole token, so the cache holds no usable secret and
    a wrong secret for a known key id never matches. Only successes are remembered. A key
    revoked by another process (the CLI) keeps working for at most ``ttl`` seconds;
    :meth:`forget` drops a key at once in this one."""

    def __init__(self, ttl: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str) -> Principal | None:
        key = self._key(token)
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] <= self._clock():
            del self._entries[key]
            return None
        return hit[1]

    def put(self, token: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        key = self._key(token)
        self._entries[key] = (self._clock() + self.ttl, principal)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, key_id: str) -> None:
        for key in [k for k, (_, p) in self._entries.items() if p.key_id == key_id]:
            del self._entries[key]


CurrentPrincipal = Annotated[Principal, Depends(_principal)]

# Required by every idempotent POST: the schema says so, as the endpoint does.
IdempotencyKey = Annotated[str, Header(
    min_length=1, max_length=200,
    description="Any unique string; a retry with the same key and body replays the answer.")]
OptionalIdempotencyKey = Annotated[str | None, Header(
    min_length=1, max_length=200,
    description="Optional here; with one, a retry with the same key and body replays.")]


def require_scope(*scopes: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency answering the caller if it holds every one of ``scopes``, else 403. A
    money scope an access token lacks is one its grant did not prove a step-up for (or whose
    window has passed): the refusal says so."""
    async def _check(principal: CurrentPrincipal) -> Principal:
        for scope in scopes:
            if principal.has(scope):
                continue
            if scope in MONEY_SCOPES and not principal.admin_moves_money:
                acting = " and never while an admin acts for a merchant the admin does " \
                    "not own" if principal.owner_type == "merchant" else ""
                raise Forbidden(f"this access token lacks the {scope!r} scope: a token "
                                "carries it only for a while after a step-up (TOTP or "
                                f"payment password in its grant){acting}")
            raise Forbidden(f"this API key lacks the {scope!r} scope")
        return principal

    return _check


def user_of(principal: Principal, what: str) -> str:
    """The user id behind ``principal``, for actions a person answers for (audited as
    theirs); a key of a store or merchant is refused: ``what`` "are made with a user's own
    API key"."""
    if principal.owner_type != "user":
        raise Forbidden(f"{what} are made with a user's own API key")
    return principal.owner_id


def require_any_scope(*scopes: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def _check(principal: CurrentPrincipal) -> Principal:
        if not any(principal.has(s) for s in scopes):
            raise Forbidden(f"this API key needs one of the scopes {', '.join(scopes)}")
        return principal

    return _check
