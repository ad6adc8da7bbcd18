"""FastAPI dependencies as ``Annotated`` aliases: the session (one transaction per request),
the settings and the authenticated caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.errors import Forbidden, Unauthenticated
from satvault.accounts.service import Principal, authenticate_api_key
from satvault.config import Settings

__all__ = ["CurrentPrincipal", "SessionDep", "SettingsDep", "require_any_scope", "require_scope"]


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
    already locked by its own caller (SQLite has one writer)."""
    token = x_api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise Unauthenticated("use 'Authorization: Bearer <api key>'")
        token = value
    if not token:
        raise Unauthenticated("an API key is required")
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session, session.begin():
        return await authenticate_api_key(session, token)


CurrentPrincipal = Annotated[Principal, Depends(_principal)]


def require_scope(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def _check(principal: CurrentPrincipal) -> Principal:
        if not principal.has(scope):
            raise Forbidden(f"this API key lacks the {scope!r} scope")
        return principal

    return _check


def require_any_scope(*scopes: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def _check(principal: CurrentPrincipal) -> Principal:
        if not any(principal.has(s) for s in scopes):
            raise Forbidden(f"this API key needs one of the scopes {', '.join(scopes)}")
        return principal

    return _check
