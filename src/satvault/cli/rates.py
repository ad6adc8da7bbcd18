"""``satvault rates …``: the fiat rates' movement bounds, from the command line.

``show CURRENCY`` asks the configured sources now and prints their median beside what was
accepted before (the last rate, the range within the drift window) and whether the bounds
would refuse it, and why. ``accept CURRENCY --as ADMIN`` is for a genuine move past a bound
(a crash or rally larger than ``SATVAULT_RATE_MAX_MOVE_BP`` or ``…_MAX_DRIFT_BP``, which
otherwise stops fiat invoices until the window has passed): a person who has checked the
market records the sources' current median as accepted, the only rate the bounds measure
from afterwards; the audit log gets a ``rate.accept`` row with who, why and the rate before.
It is also how a currency gets its first rate when fewer live sources than
``SATVAULT_RATE_FIRST_MIN_SOURCES`` quote it. The sources must still agree
(``SATVAULT_RATE_MIN_SOURCES``, ``…_MAX_SPREAD_BP``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.cli._common import admin_actor, with_database
from satvault.cli._common import emit as _emit
from satvault.config import get_settings
from satvault.db import utcnow
from satvault.rates.base import Rate, normalize_currency
from satvault.rates.bounds import Bounds, Recalled
from satvault.rates.errors import RateConflict
from satvault.rates.memory import accept_rate, recall

__all__ = ["app"]

app = typer.Typer(help="Fiat rates: what the sources say and what was accepted; accepting a "
                       "genuine move past a bound.", no_args_is_help=True)
Currency = Annotated[str, typer.Argument(help="The fiat currency of BTC/<currency>: USD, EUR…")]


def _rate(rate: Rate) -> dict[str, Any]:
    return {"minor_units_per_btc": rate.minor_per_btc, "price": str(rate.major_per_btc),
            "source": rate.source, "at": rate.fetched_at}


def _recalled(seen: Recalled) -> dict[str, Any]:
    last = None if seen.last is None else {"minor_units_per_btc": seen.last,
                                           "accepted_at": seen.last_at}
    return {"last": last, "low": seen.low, "high": seen.high}


async def _median(sessions: async_sessionmaker[AsyncSession],
                  currency: str) -> tuple[Rate, int | None, Bounds]:
    """The sources' median now, how many agreed on it, and the bounds of the settings."""
    from satvault.composition import rate_service  # the whole platform: only when used

    service = rate_service(get_settings(), sessions, ttl_seconds=0)
    try:
        return (*await service.median(currency), service.bounds)
    finally:
        await service.close()


@app.command("show")
def show(currency: Currency) -> None:
    """The sources' median now, what was accepted, and the bound it would break (or null)."""
    async def work(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
        code = normalize_currency(currency)
        rate, vouched, bounds = await _median(sessions, code)
        now = utcnow()
        async with sessions() as s:
            seen = await recall(s, code, since=bounds.drift_since(now))
        refusal = bounds.refusal(rate, seen, now, vouched=vouched) if bounds.active else None
        return {"ok": True, "currency": code, "median": _rate(rate),
                "accepted": {**_recalled(seen), "since": bounds.drift_since(now)},
                "refused": refusal.reason if refusal else None}
    _emit(with_database(work))


@app.command("accept")
def accept(currency: Currency,
           as_: Annotated[str, typer.Option("--as", help="The acting admin's e-mail address "
                                                         "or id.")],
           reason: Annotated[str, typer.Option(help="Why (audited).")] = "") -> None:
    """Record the sources' current median as accepted, past the movement bounds (audited)."""
    async def work(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
        code = normalize_currency(currency)
        async with sessions() as s:
            actor = await admin_actor(s, as_)  # before asking the sources: refused early
        rate, _, _ = await _median(sessions, code)

        async def once() -> dict[str, Any]:
            async with sessions() as s, s.begin():
                before = await accept_rate(s, rate=rate, actor=actor, reason=reason)
            return {"ok": True, "currency": code, "accepted": _rate(rate),
                    "before": _recalled(before), "actor": actor}
        try:
            return await once()
        except RateConflict:  # a process recorded a rate at that moment: once more
            return await once()
    _emit(with_database(work))
