"""Where a ``RateService`` remembers the rates it accepted, for the movement bounds
(``bounds``): in the database (``DbRateMemory``), shared by every process and kept over a
restart, or in the service's own process (``ProcessMemory``, for a service built without a
database: a report's, a test's).

``DbRateMemory`` is asked only when a rate is fetched (a cache miss), after the sources have
answered and before any invoice's transaction: one short transaction of its own reads the
last accepted rate and the range within the drift window, checks the new rate against them
and, if it passes, records it and deletes the rows no bound reads any more (four statements).
Two processes doing so at once take the same next ``seq``; the primary key lets one in and
the other starts again, checking its rate against the first one's, so the bounds hold between
processes as within one.

:func:`accept_rate` is the way past a bound for a person (``satvault rates accept``): the rate
given becomes the only one remembered for its currency, and the audit log says who and why.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Protocol

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.audit.service import record
from satvault.db import utcnow
from satvault.logs import get_logger
from satvault.rates.base import Rate
from satvault.rates.bounds import Bounds, Recalled, Refusal
from satvault.rates.errors import RateConflict, RateRefused
from satvault.rates.models import AcceptedRate

__all__ = ["DbRateMemory", "ProcessMemory", "RateMemory", "accept_rate", "recall", "remember"]

log = get_logger(__name__)

_ATTEMPTS = 5  # processes accepting the same currency in the same instant, one after another


class RateMemory(Protocol):
    async def accept(self, rate: Rate, *, at: datetime, bounds: Bounds,
                     vouched: int | None = None) -> Refusal | None:
        """Record ``rate`` as accepted at ``at`` unless ``bounds`` refuse it against what was
        accepted before (then the refusal, and nothing recorded); ``vouched`` as for
        :meth:`Bounds.refusal`."""
        ...


class ProcessMemory:
    """The accepted rates of this process only: ``(seq, minor, at)`` per currency."""

    def __init__(self) -> None:
        self._rows: dict[str, list[tuple[int, int, datetime]]] = defaultdict(list)

    def recall(self, currency: str, *, since: datetime | None = None) -> Recalled:
        rows = self._rows.get(currency, [])
        if not rows:
            return Recalled()
        seq, last, last_at = rows[-1]
        window = [m for _, m, at in rows if since is None or at >= since]
        return Recalled(seq, last, last_at, min(window, default=None),
                        max(window, default=None))

    async def accept(self, rate: Rate, *, at: datetime, bounds: Bounds,
                     vouched: int | None = None) -> Refusal | None:
        # No await in here: one fetch's check and record cannot interleave with another's.
        seen = self.recall(rate.currency, since=bounds.drift_since(at))
        refusal = bounds.refusal(rate, seen, at, vouched=vouched)
        if refusal is None:
            keep = bounds.keep_since(at)
            rows = self._rows[rate.currency]
            rows[:] = [r for r in rows if r[2] >= keep]
            rows.append((seen.seq + 1, rate.minor_per_btc, at))
        return refusal


class DbRateMemory:
    """The accepted rates in ``accepted_rates``, each check and record in a transaction of
    its own from ``sessions``."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def accept(self, rate: Rate, *, at: datetime, bounds: Bounds,
                     vouched: int | None = None) -> Refusal | None:
        for _ in range(_ATTEMPTS):
            try:
                async with self._sessions() as session, session.begin():
                    return await remember(session, rate, at=at, bounds=bounds,
                                          vouched=vouched)
            except RateConflict:
                continue  # another process took that seq: check again against its rate
        log.error("rate_record_contended", currency=rate.currency, attempts=_ATTEMPTS)
        raise RateRefused(rate.currency, f"{_ATTEMPTS} other processes recorded a rate at "
                                         "the same moment; try again")


_t: Table = AcceptedRate.__table__  # type: ignore[assignment]


async def recall(session: AsyncSession, currency: str, *, since: datetime | None = None,
                 span: bool = True) -> Recalled:
    """The last rate accepted for ``currency`` and (``span``) the range of those accepted
    since ``since`` (None: all remembered ones)."""
    last = (await session.execute(
        select(_t.c.seq, _t.c.minor_per_btc, _t.c.accepted_at)
        .where(_t.c.currency == currency).order_by(_t.c.seq.desc()).limit(1))).first()
    if last is None:
        return Recalled()
    if not span:
        return Recalled(last.seq, last.minor_per_btc, last.accepted_at)
    query = select(func.min(_t.c.minor_per_btc), func.max(_t.c.minor_per_btc)) \
        .where(_t.c.currency == currency)
    if since is not None:
        query = query.where(_t.c.accepted_at >= since)
    low, high = (await session.execute(query)).one()
    return Recalled(last.seq, last.minor_per_btc, last.accepted_at, low, high)


async def _insert(session: AsyncSession, rate: Rate, *, seq: int, at: datetime,
                  by: str | None) -> None:
    try:
        await session.execute(insert(_t).values(
            currency=rate.currency, seq=seq, minor_per_btc=rate.minor_per_btc,
            source=rate.source[:200], accepted_at=at, accepted_by=by))
    except IntegrityError as exc:  # the primary key: another process took ``seq`` first
        raise RateConflict(f"another rate for {rate.currency} was recorded as #{seq} at the "
                           "same moment") from exc


async def remember(session: AsyncSession, rate: Rate, *, at: datetime,
                   bounds: Bounds, vouched: int | None = None) -> Refusal | None:
    """Check ``rate`` against what was accepted for its currency and, if ``bounds`` let it
    through, record it and forget the rows no bound reads any more; otherwise the refusal,
    nothing written. Raises :class:`RateConflict` (roll back and call again) when another
    transaction recorded a rate for the currency in between."""
    seen = await recall(session, rate.currency, since=bounds.drift_since(at),
                        span=bool(bounds.drift_window))
    refusal = bounds.refusal(rate, seen, at, vouched=vouched)
    if refusal is not None:
        return refusal
    await _insert(session, rate, seq=seen.seq + 1, at=at, by=None)
    await session.execute(delete(_t).where(_t.c.currency == rate.currency,
                                           _t.c.accepted_at < bounds.keep_since(at),
                                           _t.c.seq <= seen.seq))
    return None


async def accept_rate(session: AsyncSession, *, rate: Rate, actor: str, reason: str = "",
                      at: datetime | None = None) -> Recalled:
    """A person's decision that ``rate`` is right (a genuine move beyond a bound): it becomes
    the only rate remembered for its currency, so the bounds measure from it; audited as
    ``rate.accept`` with what was remembered before, which is returned. Raises
    :class:`RateConflict` (roll back and call again) when a process recorded a rate for the
    currency in between."""
    at = at or utcnow()
    seen = await recall(session, rate.currency)
    await session.execute(delete(_t).where(_t.c.currency == rate.currency,
                                           _t.c.seq <= seen.seq))
    await _insert(session, rate, seq=seen.seq + 1, at=at, by=actor)
    await record(session, actor=actor, action="rate.accept", object=f"BTC/{rate.currency}",
                 before={"rate": seen.last, "accepted_at": seen.last_at, "low": seen.low,
                         "high": seen.high},
                 after={"rate": rate.minor_per_btc, "source": rate.source, "reason": reason},
                 at=at)
    log.warning("rate_accepted_by_operator", currency=rate.currency, actor=actor,
                rate=rate.minor_per_btc, before=seen.last, reason=reason)
    return seen
