"""``/admin/reports``: the regulatory reports the admin API offers — the compliance report
(JSON, CSV, PDF) and the large-transaction report (CTR: JSON, CSV) — for a chosen period,
downloaded as files, built by the same report services."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response

from satvault.kernel.clock import utcnow
from satvault.kernel.errors import InvalidInput
from satvault.rates.service import RateService, comparing_rate_service
from satvault.reports.compliance import ctr_csv, report_csv, report_pdf
from satvault.reports.service import ctr_report, period_report
from satvault.web.deps import SessionDep
from satvault.web.pages.admin.common import admin_router
from satvault.web.pages.deps import PageAdmin, PageLang
from satvault.web.pages.render import render
from satvault.web.state import runtime_of, settings_of

__all__ = ["REPORTS", "router"]

router = admin_router()
# Each report and the formats the API gives it.
REPORTS = {"compliance": ("json", "csv", "pdf"), "ctr": ("json", "csv")}
_TYPES = {"json": "application/json", "csv": "text/csv", "pdf": "application/pdf"}


@router.get("/reports", response_class=HTMLResponse)
async def reports(request: Request, view: PageAdmin, lang: PageLang) -> HTMLResponse:
    today = utcnow().date()
    first = today.replace(day=1)
    last_month_end = first - timedelta(days=1)
    return render(request, "admin/reports.html", lang=lang, view=view, reports=REPORTS,
                  start=last_month_end.replace(day=1).isoformat(),
                  end=last_month_end.isoformat())


def _period(start: str, end: str) -> tuple[date, date]:
    try:
        lo, hi = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        raise InvalidInput("the period's days are YYYY-MM-DD") from None
    # The API's bounds (routes/reports.py _check).
    if hi < lo:
        raise InvalidInput(f"the period ends ({hi}) before it starts ({lo})")
    if (hi - lo).days > 366:
        raise InvalidInput("a report covers at most 367 days")
    return lo, hi


async def _with_rates(request: Request, work: Any) -> Any:
    runtime = runtime_of(request)
    if runtime is not None and runtime.rates is not None:
        return await work(runtime.rates)
    settings = settings_of(request)
    rates: RateService = comparing_rate_service(settings)
    try:
        return await work(rates)
    finally:
        await rates.close()


@router.get("/reports/download")
async def download(request: Request, view: PageAdmin, session: SessionDep,
                   report: Annotated[str, Query(max_length=20)],
                   start: Annotated[str, Query(alias="from", max_length=10)],
                   end: Annotated[str, Query(alias="to", max_length=10)],
                   format: Annotated[str, Query(max_length=4)] = "csv") -> Response:
    if report not in REPORTS or format not in REPORTS[report]:
        raise InvalidInput(f"no {format!r} format of a {report!r} report")
    lo, hi = _period(start, end)
    settings = settings_of(request)
    name = f"{report}-{lo.isoformat()}-{hi.isoformat()}.{format}"
    body: bytes | str
    if report == "ctr":
        doc = await _with_rates(request, lambda rates: ctr_report(
            session, lo, hi, settings=settings, rates=rates))
        body = ctr_csv(doc["customer_days"]) if format == "csv" else \
            json.dumps(doc, default=str, indent=2)
    else:
        doc, rate = await _with_rates(request, lambda rates: period_report(
            session, lo, hi, settings=settings, rates=rates))
        body = (report_csv(doc) if format == "csv" else report_pdf(doc, rate)
                if format == "pdf" else json.dumps(doc, default=str, indent=2))
    return Response(body, media_type=_TYPES[format],
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "Cache-Control": "no-store"})
