"""How far a rate may be from the rates accepted before it: the pure core of the movement
bounds (values in, a refusal or ``None`` out; no session, clock or settings).

Three bounds, each off when its window is 0:

* **move**: no further than ``max_move_bp`` from the last rate accepted, if that was less than
  ``move_window`` ago. Catches a jump: one source gone wrong, a stale fixed fallback.
* **drift**: the rates accepted within ``drift_window``, the new one included, must not span
  more than ``max_drift_bp`` of their lowest (highest over lowest). Catches what the move
  bound follows: steps each under ``max_move_bp`` that add up (+15% every 20 minutes passes
  every move check, and doubles the price in 100 minutes).
* **gap** (with the drift bound): when nothing was accepted within ``drift_window`` (a
  currency nobody priced for a day, a platform stopped over a weekend), no further from the
  last rate accepted, however long ago, than ``max_drift_bp`` per ``drift_window`` since it:
  where the drift bound would have let the price walk in that time, and no further. 30% a day
  allows 30% after one day without a rate, 60% after two.
* **first**: a currency never priced before (a new database, a currency new to it) has
  nothing to be measured against, so its first rate needs a second opinion instead: at
  least ``first_min_sources`` sources agreeing on it (within the spread the service
  checks), or prices a person gave (the ``fixed`` source alone, or ``satvault rates
  accept``). One exchange's word alone, possibly wrong or spoofed, would otherwise price
  invoices and then anchor every bound after it.

A genuine move beyond either bound stops fiat pricing until the window has passed, or until a
person accepts the current rate (``satvault rates accept``), which replaces the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from satvault.rates.base import Rate

__all__ = ["Bounds", "Recalled", "Refusal", "beyond_bp"]


def beyond_bp(value: int, reference: int, limit_bp: int) -> bool:
    """Whether ``value`` lies more than ``limit_bp`` basis points from ``reference`` (exact)."""
    return abs(value - reference) * 10_000 > limit_bp * reference


def _percent(value: int, reference: int) -> str:
    """The move for the message, in basis points rounded up: a refused move never reads as
    the limit itself (found from outside: 20.0000139 % said "moved 20.00% ... (limit
    20.00%)")."""
    bp = -(-abs(value - reference) * 10_000 // reference)
    return f"{Decimal(bp).scaleb(-2):.2f}%"


def _bp(limit: int) -> str:
    return f"{Decimal(limit).scaleb(-2):.2f}%"


@dataclass(frozen=True, slots=True)
class Recalled:
    """What was accepted for one currency: the last rate (``seq`` numbers it, 0: none), and
    the lowest and highest accepted since some moment (None: none since)."""

    seq: int = 0
    last: int | None = None
    last_at: datetime | None = None
    low: int | None = None
    high: int | None = None


class Refusal(NamedTuple):
    event: str  # the log event: rate_moved_too_far, rate_drifted_too_far, rate_first_alone
    reason: str


@dataclass(frozen=True, slots=True)
class Bounds:
    max_move_bp: int = 2000
    move_window: timedelta = timedelta(hours=1)
    max_drift_bp: int = 3000
    drift_window: timedelta = timedelta(days=1)
    first_min_sources: int = 1

    def __post_init__(self) -> None:
        if min(self.max_move_bp, self.max_drift_bp) < 0 \
                or min(self.move_window, self.drift_window) < timedelta():
            raise ValueError("the rate move and drift limits and windows must not be negative")
        if self.first_min_sources < 1:
            raise ValueError("a first rate needs at least one source")

    @property
    def active(self) -> bool:
        """Whether any bound looks at history (else nothing need be remembered)."""
        return bool(self.move_window or self.drift_window)

    def drift_since(self, now: datetime) -> datetime:
        """Where the range the drift bound measures starts."""
        return now - self.drift_window

    def keep_since(self, now: datetime) -> datetime:
        """Rows older than this are read by no bound any more."""
        return now - max(self.move_window, self.drift_window)

    def refusal(self, rate: Rate, seen: Recalled, now: datetime, *,
                vouched: int | None = None) -> Refusal | None:
        """Why ``rate``, accepted at ``now``, would break a bound given ``seen`` (its range
        measured from :meth:`drift_since`), or None. ``vouched``: how many sources agreed on
        it (None: a person's prices, the ``fixed`` source alone)."""
        value, scale = rate.minor_per_btc, rate.scale

        def major(minor: int) -> Decimal:
            return Decimal(minor).scaleb(-scale)

        said = f"{rate.source} says {rate.major_per_btc}"
        if not seen.seq and vouched is not None and vouched < self.first_min_sources:
            return Refusal("rate_first_alone", (
                f"{said}, and no rate for {rate.currency} was accepted before to measure it "
                f"against: a first rate needs {self.first_min_sources} sources agreeing "
                f"(here {vouched}), or a person's `satvault rates accept {rate.currency}`"))
        if self.move_window and seen.last is not None and seen.last_at is not None \
                and now - seen.last_at <= self.move_window \
                and beyond_bp(value, seen.last, self.max_move_bp):
            ago = max(0, int((now - seen.last_at).total_seconds()) // 60)
            return Refusal("rate_moved_too_far", (
                f"{said}, which moved {_percent(value, seen.last)} from {major(seen.last)} "
                f"accepted {ago} min ago (limit {_bp(self.max_move_bp)} within "
                f"{int(self.move_window.total_seconds()) // 60} min)"))
        gap = now - seen.last_at if seen.last_at is not None else None
        if self.drift_window and seen.last is not None and gap is not None \
                and gap > self.drift_window:
            allowed = self.max_drift_bp * int(gap.total_seconds()) \
                // max(1, int(self.drift_window.total_seconds()))
            if beyond_bp(value, seen.last, allowed):
                hours = int(gap.total_seconds()) // 3600
                return Refusal("rate_moved_too_far", (
                    f"{said}, which moved {_percent(value, seen.last)} from "
                    f"{major(seen.last)}, the last rate accepted, {hours} h ago (limit "
                    f"{_bp(allowed)} after that long: {_bp(self.max_drift_bp)} per "
                    f"{int(self.drift_window.total_seconds()) // 60} min)"))
        if self.drift_window and seen.low is not None and seen.high is not None:
            low, high = min(seen.low, value), max(seen.high, value)
            if beyond_bp(high, low, self.max_drift_bp):
                return Refusal("rate_drifted_too_far", (
                    f"{said}, which would make the rates accepted within "
                    f"{int(self.drift_window.total_seconds()) // 60} min span "
                    f"{_percent(high, low)} ({major(low)} to {major(high)}) "
                    f"(limit {_bp(self.max_drift_bp)})"))
        return None
