"""What every ``satvault`` sub-command shares: one JSON object on stdout, a failure as
``{"ok": false, "error": …}`` with an exit code, and a unit of work on the configured
database (refused, exit 2, when the schema is not current)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.config import Settings, get_settings
from satvault.kernel.errors import SatvaultError
from satvault.migrate import SchemaNotCurrent, ensure_current

__all__ = ["emit", "fail", "in_transaction", "with_database"]

T = TypeVar("T")


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    emit({"ok": False, "error": message})
    raise typer.Exit(code)


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
    except SatvaultError as exc:
        fail(str(exc))


def in_transaction(work: Callable[[AsyncSession], Awaitable[T]],
                   settings: Settings | None = None) -> T:
    """Run ``work`` in one transaction (see :func:`with_database`)."""
    async def one(sessions: async_sessionmaker[AsyncSession]) -> T:
        async with sessions() as session, session.begin():
            return await work(session)

    return with_database(one, settings)
