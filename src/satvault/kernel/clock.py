"""The one clock of the process.

Everything that asks "what time is it?" (timestamps written to the database, expiry and
retry deadlines, BOLT11 expiry checks) asks :func:`utcnow`, which reads the process clock:
a :class:`SystemClock` unless the composition root or a test installed another with
:func:`set_clock` or :func:`using`. Tests install a :class:`FakeClock` and move it forward
instead of sleeping until a deadline passes.

What this clock does not govern: how long a loop waits between ticks and how long a remote
call may take. Those are durations on the event loop's own clock; a test that wants the work
done now wakes the worker or calls its ``step()`` after moving the clock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

__all__ = ["Clock", "FakeClock", "SystemClock", "get_clock", "set_clock", "unix_time",
           "using", "utcnow"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The machine's wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock a test moves. By default it runs with the real clock plus an offset that
    :meth:`advance` grows, so time still passes between two reads and rows written one after
    the other keep their order; with ``frozen=True`` (or a ``start``) it stands still until
    moved. Never goes backwards unless :meth:`set` is told so. Thread-safe (simulated nodes
    read it from their own threads)."""

    def __init__(self, start: datetime | None = None, *, frozen: bool = False) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._lock = threading.Lock()
        self._frozen = frozen or start is not None
        self._base = start.astimezone(UTC) if start is not None else datetime.now(UTC)
        self._offset = timedelta()

    def now(self) -> datetime:
        with self._lock:
            if self._frozen:
                return self._base + self._offset
            return datetime.now(UTC) + self._offset

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        """Move forward by ``seconds`` (and/or ``timedelta`` keywords: ``minutes=5``);
        returns the new time."""
        step = timedelta(seconds=seconds, **delta)
        if step < timedelta():
            raise ValueError("a clock only moves forward; use set() to go back")
        with self._lock:
            self._offset += step
        return self.now()

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (forwards or backwards) and stand still there."""
        if moment.tzinfo is None:
            raise ValueError("FakeClock.set needs a timezone-aware moment")
        with self._lock:
            self._frozen, self._base, self._offset = True, moment.astimezone(UTC), timedelta()

    __call__ = now  # usable where a ``Callable[[], datetime]`` is expected

    def timestamp(self) -> float:
        """:meth:`now` as seconds since the epoch (for code that speaks ``time.time()``)."""
        return self.now().timestamp()

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now().isoformat()})"


_clock: Clock = SystemClock()
C = TypeVar("C", bound=Clock)


def get_clock() -> Clock:
    return _clock


def set_clock(clock: Clock) -> Clock:
    """Install ``clock`` as the process clock; returns the one it replaces."""
    global _clock
    previous, _clock = _clock, clock
    return previous


@contextmanager
def using(clock: C) -> Iterator[C]:
    """``with using(FakeClock()) as clock:`` the process reads ``clock`` inside the block."""
    previous = set_clock(clock)
    try:
        yield clock
    finally:
        set_clock(previous)


def utcnow() -> datetime:
    """Now, from the process clock (timezone-aware UTC)."""
    return _clock.now()


def unix_time() -> float:
    """Now as seconds since the epoch, from the process clock (``time.time()``'s stand-in)."""
    return _clock.now().timestamp()
