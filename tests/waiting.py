"""Waiting for a condition instead of sleeping for a guessed duration.

``await eventually(lambda: len(calls) == 2)`` polls the condition (a plain or an async
callable) until it is true and returns its value, or fails the test after ``timeout`` seconds
with ``message``. The timeout is a ceiling for a broken build, not a duration the test needs:
a passing test waits only as long as the work takes. :func:`wait_until` is the same for
synchronous tests (subprocesses, threads)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["eventually", "lock_waiter", "wait_until"]

T = TypeVar("T")


async def eventually(condition: Callable[[], T | Awaitable[T]], *, timeout: float = 10.0,
                     interval: float = 0.01, message: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value: Any = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout} s: "
                                 f"{getattr(condition, '__name__', condition)!r} → {value!r}")
        await asyncio.sleep(interval)


def wait_until(condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.01,
               message: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout} s: "
                                 f"{getattr(condition, '__name__', condition)!r} → {value!r}")
        time.sleep(interval)


async def lock_waiter(engine: AsyncEngine, task: asyncio.Task[Any], *, query_like: str = "%",
                      timeout: float = 20.0) -> int:
    """The pid of a backend of ``engine``'s PostgreSQL database that waits for a lock, its
    query ``LIKE query_like``, as soon as there is one; fails if ``task`` (the work expected to
    wait) finishes first. Each probe is a transaction of its own (autocommit): within one
    transaction ``pg_stat_activity`` is a snapshot taken at first access, and a probe that
    started before the waiter would never see it."""
    async with engine.connect() as probe:
        await probe.execution_options(isolation_level="AUTOCOMMIT")

        async def waiting() -> int | None:
            if task.done():
                raise AssertionError(f"it finished without waiting for a lock: "
                                     f"{task.exception() or task.result()!r}")
            pid: int | None = (await probe.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() AND query LIKE :q"), {"q": query_like})
            ).scalar()
            return pid

        return await eventually(waiting, timeout=timeout, interval=0.02,
                                message="nothing waited for a lock")
