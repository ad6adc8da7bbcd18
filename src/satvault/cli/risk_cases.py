"""``satvault risk cases …``: the review queue from the command line.

``list`` and ``show`` read; ``assign``, ``investigate``, ``note``, ``attach`` and ``close``
work a case as the admin named by ``--as`` (every action audited); ``close`` is the only way
money a review decision held moves (``--money release|return``, for a frozen deposit
``release|keep``). ``sar`` drafts the case's
SAR (once), optionally rewrites its narrative, files it with the authority's reference and
writes it as a PDF.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.cli._common import admin_actor, admin_user, emit, in_transaction, output
from satvault.config import get_settings
from satvault.invoices.service import apply_payment
from satvault.rates.base import Rate
from satvault.rates.errors import RateError
from satvault.rates.service import comparing_rate_service
from satvault.risk import cases as svc
from satvault.risk import sar as sars
from satvault.risk.models import CaseStatus
from satvault.withdrawals.review import HeldWithdrawals

__all__ = ["app"]

app = typer.Typer(help="The review queue: cases opened by review and reject decisions.",
                  no_args_is_help=True)
AsAdmin = Annotated[str, typer.Option("--as", help="The acting admin's e-mail address.")]
Case = Annotated[str, typer.Argument(help="The case id (case_…).")]




@app.command("list")
def list_(status: Annotated[CaseStatus | None, typer.Option(help="pending, investigating "
                                                                 "or closed.")] = None,
          assignee: Annotated[str | None, typer.Option(
              help="An admin's e-mail address or id.")] = None,
          wallet: Annotated[str | None, typer.Option(help="A wallet id.")] = None,
          limit: Annotated[int, typer.Option(min=1, max=500)] = 100) -> None:
    """Cases, newest first."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        who = None if assignee is None else (await admin_user(s, assignee)).id
        return {"ok": True, "cases": await svc.list_cases(
            s, status=status, assignee=who, wallet_id=wallet, limit=limit)}
    emit(in_transaction(work))


@app.command("show")
def show(case: Case) -> None:
    """A case with its decision, history and SAR."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        return {"ok": True, **await svc.get_case(s, case)}
    emit(in_transaction(work))


@app.command("assign")
def assign(case: Case, to: Annotated[str, typer.Option(
        "--to", help="The admin's e-mail address or id.")], as_: AsAdmin) -> None:
    async def work(s: AsyncSession) -> dict[str, Any]:
        user = await admin_user(s, to)
        return {"ok": True, **await svc.assign(s, case_id=case, assignee=user.id,
                                               actor=await admin_actor(s, as_))}
    emit(in_transaction(work))


@app.command("investigate")
def investigate(case: Case, as_: AsAdmin) -> None:
    """pending → investigating."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        return {"ok": True, **await svc.investigate(s, case_id=case,
                                                    actor=await admin_actor(s, as_))}
    emit(in_transaction(work))


@app.command("note")
def note(case: Case, text: Annotated[str, typer.Argument(help="The note.")],
         as_: AsAdmin) -> None:
    async def work(s: AsyncSession) -> dict[str, Any]:
        return {"ok": True, **await svc.add_note(s, case_id=case, text=text,
                                                 actor=await admin_actor(s, as_))}
    emit(in_transaction(work))


@app.command("attach")
def attach(case: Case,
           uri: Annotated[str, typer.Option(help="Where the file is kept.")],
           sha256: Annotated[str, typer.Option(help="The file's SHA-256, hex.")],
           as_: AsAdmin,
           description: Annotated[str, typer.Option(help="What it is.")] = "") -> None:
    """An attachment by reference (the file itself is not stored)."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        return {"ok": True, **await svc.attach(s, case_id=case, uri=uri, sha256=sha256,
                                               description=description,
                                               actor=await admin_actor(s, as_))}
    emit(in_transaction(work))


@app.command("close")
def close(case: Case,
          resolution: Annotated[str, typer.Option(
              help="confirmed_risk or false_positive.")],
          as_: AsAdmin,
          money: Annotated[str | None, typer.Option(
              help="release, return, keep (a frozen deposit) or none (default: return for a "
                   "held withdrawal and keep for a frozen deposit when the risk is confirmed, "
                   "release for a false positive, none when nothing is held).")] = None,
          note: Annotated[str, typer.Option(help="A closing note.")] = "") -> None:
    """Decide the case; held money moves only here. A Lightning payment released here is
    sent by the running server's payer at its next round."""
    settings = get_settings()
    held = HeldWithdrawals(settings, partial(apply_payment, settings=settings))

    async def work(s: AsyncSession) -> dict[str, Any]:
        decided = await svc.close_case(s, case_id=case, resolution=resolution, money=money,
                                       note=note, actor=await admin_actor(s, as_), held=held)
        return {"ok": True, **decided.case, "acted": decided.acted, "effect": decided.effect}
    emit(in_transaction(work, settings))


def _rate() -> Rate | None:
    settings = get_settings()

    async def fetch() -> Rate:
        rates = comparing_rate_service(settings)
        try:
            return await rates.rate(settings.report_currency)
        finally:
            await rates.close()
    try:
        return asyncio.run(fetch())
    except RateError:
        return None  # the SAR is drafted without fiat amounts


@app.command("sar")
def sar(case: Case, as_: AsAdmin,
        narrative: Annotated[str | None, typer.Option(
            help="Replace the draft's narrative.")] = None,
        file_reference: Annotated[str | None, typer.Option(
            "--file-reference", help="File it, with the authority's reference.")] = None,
        pdf: Annotated[Path | None, typer.Option(help="Write the SAR as a PDF here.")] = None,
        ) -> None:
    """Draft the case's SAR (once), edit its narrative, file it, export it (JSON; PDF)."""
    rate = _rate()

    async def work(s: AsyncSession) -> dict[str, Any]:
        actor = await admin_actor(s, as_)
        out = await sars.generate_sar(s, case_id=case, actor=actor, rate=rate)
        if narrative is not None:
            out = await sars.edit_narrative(s, case_id=case, narrative=narrative, actor=actor)
        if file_reference is not None:
            out = await sars.file_sar(s, case_id=case, reference=file_reference, actor=actor)
        return out
    if pdf is None:
        body = in_transaction(work)
    else:  # the file first: a path that cannot be written fails before anything is filed
        with output(pdf, binary=True) as file:
            body = in_transaction(work)
            file.write(sars.sar_pdf(body))
    emit({"ok": True, **body, **({"pdf": str(pdf)} if pdf is not None else {})})
