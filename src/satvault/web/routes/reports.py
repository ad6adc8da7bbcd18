"""Regulatory reports for operators (admin scope): the large-transaction report and the
compliance report as JSON, CSV or PDF."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from satvault.accounts.service import Principal
from satvault.kernel.errors import InvalidInput
from satvault.rates.service import comparing_rate_service
from satvault.reports.compliance import ctr_csv, report_csv, report_pdf
from satvault.reports.service import ctr_report, period_report
from satvault.web.deps import SessionDep, require_scope
from satvault.web.state import runtime_of, settings_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin/reports", tags=["admin"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]
Day = Annotated[date, Query(description="A UTC day, YYYY-MM-DD (both ends included).")]


def _check(start: date, end: date) -> None:
    if end < start:
        raise InvalidInput(f"the period ends ({end}) before it starts ({start})")
    if (end - start).days > 366:
        raise InvalidInput("a report covers at most 367 days")


async def _with_rates(request: Request, work: Any) -> Any:
    runtime = runtime_of(request)
    if runtime is not None and runtime.rates is not None:
        return await work(runtime.rates)
    settings = settings_of(request)
    rates = comparing_rate_service(settings)
    try:
        return await work(rates)
    finally:
        await rates.close()


_CSV = {"text/csv": {"schema": {"type": "string"}}}


@router.get("/ctr", response_model=None, responses={
    200: {"description": "The report: JSON, or CSV with `format=csv`.", "content": _CSV}})
async def ctr(request: Request, session: SessionDep, _admin: Admin,
              start: Annotated[date, Query(alias="from", description="First UTC day.")],
              end: Annotated[date, Query(alias="to", description="Last UTC day, included.")],
              format: Literal["json", "csv"] = "json") -> Any:
    _check(start, end)
    report = await _with_rates(request, lambda rates: ctr_report(
        session, start, end, settings=settings_of(request), rates=rates))
    if format == "csv":
        return Response(ctr_csv(report["customer_days"]), media_type="text/csv")
    return report


@router.get("/compliance", response_model=None, responses={
    200: {"description": "The report: JSON, CSV (`format=csv`) or PDF (`format=pdf`).",
          "content": {**_CSV, "application/pdf": {"schema": {"type": "string",
                                                             "format": "binary"}}}}})
async def compliance(request: Request, session: SessionDep, _admin: Admin,
                     start: Annotated[date, Query(alias="from", description="First UTC day.")],
                     end: Annotated[date, Query(alias="to",
                                                description="Last UTC day, included.")],
                     format: Literal["json", "csv", "pdf"] = "json") -> Any:
    _check(start, end)
    report, rate = await _with_rates(request, lambda rates: period_report(
        session, start, end, settings=settings_of(request), rates=rates))
    if format == "csv":
        return Response(report_csv(report), media_type="text/csv")
    if format == "pdf":
        return Response(report_pdf(report, rate), media_type="application/pdf")
    return report
