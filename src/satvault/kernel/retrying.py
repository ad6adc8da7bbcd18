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
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.kernel.errors import Busy, ConcurrentUpdate

__all__ = ["db_unavailable", "is_retryable", "retrying"]

T = TypeVar("T")

_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}
# Refused before any statement ran: too many connections (53300), the server starting or
# shutting down (57P03).
_UNAVAILABLE_SQLSTATES = {"53300", "57P03"}


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ConcurrentUpdate):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return code in _RETRYABLE_SQLSTATES or "database is locked" in str(exc.orig)
    return False


def db_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says no connection to the database could be had: the pool had none
    free in time, or the server refused a new one: a 503 the client may retry, not a 500
    (found from outside: PostgreSQL at its connection ceiling answered 500s). The statement
    that wanted it never ran; one unit of work before it may have committed."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return code in _UNAVAILABLE_SQLSTATES
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
