"""``satvault report …``: the large-transaction (CTR-style) report and the periodic
compliance report, for a period of UTC days (both ends included)."""

from __future__ import annotations

import asyncio
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from satvault.cli._common import emit as _emit
from satvault.cli._common import fail as _fail
from satvault.cli._common import output
from satvault.composition import open_database
from satvault.config import get_settings
from satvault.migrate import SchemaNotCurrent, ensure_current
from satvault.rates.errors import RateError
from satvault.rates.service import comparing_rate_service
from satvault.reports.compliance import ctr_csv, report_csv, report_pdf
from satvault.reports.service import ctr_report, period_report

__all__ = ["app"]

app = typer.Typer(help="Regulatory reports.", no_args_is_help=True)
From = Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD (UTC).")]
To = Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD (UTC), included.")]


def _period(start: str, end: str) -> tuple[date, date]:
    try:
        a, b = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        _fail(f"dates are YYYY-MM-DD: {exc}")
        raise
    if b < a:
        _fail(f"the period ends ({b}) before it starts ({a})")
    return a, b


def _run(work: Any) -> Any:
    settings = get_settings()

    async def go() -> Any:
        engine, sessions = open_database(settings, pool_size=1)
        rates = comparing_rate_service(settings)
        try:
            await ensure_current(engine)
            async with sessions() as session:
                return await work(session, settings, rates)
        finally:
            await rates.close()
            await engine.dispose()

    try:
        return asyncio.run(go())
    except SchemaNotCurrent as exc:
        _fail(str(exc), 2)
    except RateError as exc:
        _fail(f"no {settings.report_currency} rate to price the report: {exc}")


@app.command("ctr")
def ctr(start: From, end: To,
        fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json") -> None:
    """Customer-days whose money in or out, across every rail, exceeds `ctr_threshold`."""
    a, b = _period(start, end)
    if fmt not in ("json", "csv"):
        _fail("--format is json or csv")
    report = _run(lambda s, st, r: ctr_report(s, a, b, settings=st, rates=r))
    if fmt == "csv":
        sys.stdout.write(ctr_csv(report["customer_days"]))
        return
    _emit({"ok": True, **report})


@app.command("compliance")
def compliance(start: From, end: To,
               out: Annotated[Path | None, typer.Option(
                   "--out", help="Write a .pdf or .csv file; without it, JSON on stdout.")]
               = None) -> None:
    """Volumes by rail, KYC tiers, alerts and large transactions for the period."""
    a, b = _period(start, end)
    if out is not None and out.suffix not in (".pdf", ".csv"):
        _fail("--out must end in .pdf or .csv")
    if out is None:
        report, rate = _run(lambda s, st, r: period_report(s, a, b, settings=st, rates=r))
        _emit({"ok": True, **report})
        return
    with output(out, binary=out.suffix == ".pdf") as file:
        report, rate = _run(lambda s, st, r: period_report(s, a, b, settings=st, rates=r))
        file.write(report_pdf(report, rate) if out.suffix == ".pdf" else report_csv(report))
    _emit({"ok": True, "file": str(out), "period": report["period"],
           "customer_days": len(report["ctr"]["customer_days"])})
