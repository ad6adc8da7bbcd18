"""What every ``satvault`` sub-command shares: one JSON object on stdout, a failure as
``{"ok": false, "error": …}`` with an exit code, a unit of work on the configured
database (refused, exit 2, when the schema is not current), and the network check of the
commands that act on the chain node (refused, exit 1, against a node of another network)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import User
from satvault.backends.base import ChainBackend
from satvault.backends.errors import WrongChainNetwork
from satvault.backends.networks import NetworkGuard
from satvault.config import Settings, get_settings
from satvault.kernel.errors import InvalidInput, SatvaultError
from satvault.migrate import SchemaNotCurrent, ensure_current

__all__ = ["admin_actor", "admin_user", "emit", "fail", "in_transaction", "on_network",
           "refuse_network", "with_database"]

T = TypeVar("T")


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    emit({"ok": False, "error": message})
    raise typer.Exit(code)


async def on_network(backend: ChainBackend, settings: Settings,
                     guard: NetworkGuard | None = None) -> None:
    """Before a command acts on the chain node: raise :class:`WrongChainNetwork` if the node
    is on another network than ``SATVAULT_NETWORK``, as the chain workers stay stopped then
    (``guard``: the runtime's, else one for ``backend``)."""
    await (guard or NetworkGuard(backend, settings.network)).check()


def refuse_network(exc: WrongChainNetwork) -> NoReturn:
    fail(f"{exc}; nothing was done: point the chain backend at a {exc.configured} node, or "
         f"set SATVAULT_NETWORK to the node's network if it is the right one")


def with_database(work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]],
                  settings: Settings | None = None) -> T:
    """Run ``work`` with the configured database's session factory (refused, exit 2, when
    the schema is not current); a domain error is printed and exits 1."""
    settings = settings or get_settings()

    async def runner() -> T:
        from satvault.composition import open_database  # the whole platform: only when used

        engine, sessions = open_database(settings, pool_size=2)
        try:
            await ensure_current(engine)
            return await work(sessions)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(runner())
    except SchemaNotCurrent as exc:
        fail(str(exc), 2)
    except WrongChainNetwork as exc:
        refuse_network(exc)
    except SatvaultError as exc:
        fail(str(exc))


def in_transaction(work: Callable[[AsyncSession], Awaitable[T]],
                   settings: Settings | None = None) -> T:
    """Run ``work`` in one transaction (see :func:`with_database`)."""
    async def one(sessions: async_sessionmaker[AsyncSession]) -> T:
        async with sessions() as session, session.begin():
            return await work(session)

    return with_database(one, settings)


async def admin_user(session: AsyncSession, who: str) -> User:
    """The admin a command acts as (``--as``): by e-mail address or id; refused otherwise."""
    key = who.strip()
    user = (await session.execute(select(User).where(
        (User.email == key.lower()) | (User.id == key)))).scalar_one_or_none()
    if user is None or not user.is_admin:
        raise InvalidInput(f"{who!r} is not an admin user")
    return user


async def admin_actor(session: AsyncSession, who: str) -> str:
    """The audit log's name for that admin: ``user:<id>``."""
    return f"user:{(await admin_user(session, who)).id}"
