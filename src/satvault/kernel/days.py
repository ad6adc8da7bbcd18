"""The days a filter or a report names, as the UTC instants a query compares with.

A filter's days are both included: ``from`` is the midnight that starts its day, ``to`` the
midnight after its day. The last day a date can hold (9999-12-31) has no midnight after it
(``date.max + 1 day`` overflows), and nothing a query could find lies beyond it: through
that day is no upper bound at all.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

__all__ = ["day_end", "day_start"]


def day_start(day: date | None) -> datetime | None:
    """The midnight (UTC) that starts ``day``; None for no day."""
    return None if day is None else datetime.combine(day, time(), UTC)


def day_end(day: date | None) -> datetime | None:
    """The midnight (UTC) after ``day``, an exclusive bound; None for no day or the last."""
    return None if day is None or day == date.max else day_start(day + timedelta(days=1))
