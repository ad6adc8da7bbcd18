"""A merchant dashboard's figures: one wallet's volume per UTC day and rail over a period,
from the same records as the compliance reports (:mod:`.movements`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.reports.movements import movements

__all__ = ["RAILS", "DayVolume", "daily_volume"]

RAILS = ("onchain", "lightning", "internal")


@dataclass(slots=True)
class DayVolume:
    """One day's money in and out of the wallet, per rail (msat)."""

    day: date
    in_msat: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RAILS, 0))
    out_msat: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RAILS, 0))

    @property
    def total_msat(self) -> int:
        return sum(self.in_msat.values()) + sum(self.out_msat.values())


async def daily_volume(session: AsyncSession, *, wallet_id: str, start: date, end: date
                       ) -> list[DayVolume]:
    """Every day of ``[start, end]`` (days without movements too), oldest first."""
    days = [DayVolume(start + timedelta(days=i)) for i in range((end - start).days + 1)]
    by_day = {d.day: d for d in days}
    for m in await movements(session, start, end, wallet_id=wallet_id):
        sums = by_day[m.day].in_msat if m.direction == "in" else by_day[m.day].out_msat
        rail = m.rail if m.rail in RAILS else "onchain"
        sums[rail] += m.amount_msat
    return days
