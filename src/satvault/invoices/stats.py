"""A merchant's invoice conversion per UTC day: how many invoices its stores created, and how
many were settled (counted on the day each settled)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Store
from satvault.invoices.models import StoreInvoice
from satvault.invoices.status import Status

__all__ = ["DayConversion", "daily_conversion"]


@dataclass(slots=True)
class DayConversion:
    day: date
    created: int = 0
    settled: int = 0


async def daily_conversion(session: AsyncSession, *, merchant_id: str, start: date,
                           end: date) -> list[DayConversion]:
    """Every day of ``[start, end]``, oldest first."""
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    lo = datetime.combine(start, time(), UTC)
    hi = datetime.combine(end + timedelta(days=1), time(), UTC)
    days = [DayConversion(start + timedelta(days=i)) for i in range((end - start).days + 1)]
    by_day = {d.day: d for d in days}
    mine = StoreInvoice.store_id.in_(select(Store.id).where(Store.merchant_id == merchant_id))
    created = await session.execute(select(StoreInvoice.created_at).where(
        mine, StoreInvoice.created_at >= lo, StoreInvoice.created_at < hi))
    for (at,) in created:
        by_day[at.astimezone(UTC).date()].created += 1
    settled = await session.execute(select(StoreInvoice.settled_at).where(
        mine, StoreInvoice.status == Status.SETTLED, StoreInvoice.settled_at >= lo,
        StoreInvoice.settled_at < hi))
    for (settled_at,) in settled:
        if settled_at is not None:
            by_day[settled_at.astimezone(UTC).date()].settled += 1
    return days
