"""The reports for a period, with the rate they are priced at: what the CLI and the API call."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.config import Settings
from satvault.rates.base import Rate
from satvault.rates.service import RateService
from satvault.reports.compliance import compliance_report, ctr_dict
from satvault.reports.ctr import large_transactions
from satvault.reports.movements import movements

__all__ = ["ctr_report", "period_report", "threshold_minor"]


def threshold_minor(settings: Settings, rate: Rate) -> int:
    return int(Decimal(settings.ctr_threshold).scaleb(rate.scale))


async def ctr_report(session: AsyncSession, start: date, end: date, *, settings: Settings,
                     rates: RateService) -> dict[str, Any]:
    rate = await rates.rate(settings.report_currency)
    limit = threshold_minor(settings, rate)
    rows = large_transactions(await movements(session, start, end), rate, limit)
    return {"period": {"from": start.isoformat(), "to": end.isoformat()},
            "currency": rate.currency, "threshold_minor": limit,
            "rate": {"minor_per_btc": rate.minor_per_btc, "source": rate.source,
                     "at": rate.fetched_at.isoformat(timespec="seconds")},
            "customer_days": [ctr_dict(r) for r in rows]}


async def period_report(session: AsyncSession, start: date, end: date, *, settings: Settings,
                        rates: RateService) -> tuple[dict[str, Any], Rate]:
    rate = await rates.rate(settings.report_currency)
    return await compliance_report(session, start, end, rate=rate,
                                   ctr_threshold_minor=threshold_minor(settings, rate)), rate
