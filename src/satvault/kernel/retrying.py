"""Run one unit of work in its own transaction, again from scratch on a retryable conflict.

Retryable: :class:`~satvault.kernel.errors.ConcurrentUpdate` raised by our own optimistic
checks, PostgreSQL serialisation failures, deadlocks and lock timeouts, and SQLite's
"database is locked". Anything else propagates at once. The unit must not make network calls
(the transaction would hold its locks across them) and must be safe to run again: it is the
whole unit that is retried, never half of it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.kernel.errors import Busy, ConcurrentUpdate

__all__ = ["is_retryable", "retrying"]

T = TypeVar("T")

_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ConcurrentUpdate):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return code in _RETRYABLE_SQLSTATES or "database is locked" in str(exc.orig)
    return False


async def retrying(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    attempts: int = 8,
) -> T:
    """Run ``work(session)`` in its own transaction; on a retryable conflict, back off a
    random few milliseconds (doubling) and run it again, at most ``attempts`` times."""
    for attempt in range(1, attempts + 1):
        try:
            async with sessions() as session, session.begin():
                return await work(session)
        except Exception as exc:
            if not is_retryable(exc) or attempt == attempts:
                if is_retryable(exc):
                    raise Busy(f"gave up after {attempts} attempts: {exc}") from exc
                raise
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise AssertionError("unreachable")
