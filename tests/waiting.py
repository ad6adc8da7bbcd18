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

__all__ = ["eventually", "wait_until"]

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
