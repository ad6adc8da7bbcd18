"""The admin console's custody pages.

* ``/admin/balances``: what the platform holds, tier by tier (deposit — the hot tier —,
  semi-cold, cold, Lightning), against what it owes its customers, and the coverage ratio:
  the figures of :func:`satvault.custody.status.custody_status`, which ``satvault custody
  status`` and ``/metrics`` show too; then the reconciliation: the last run, the open
  incidents, and a button that runs it now (:func:`satvault.composition.reconcile_now`, as
  ``GET /api/v1/admin/reconciliation`` does: node calls first, no transaction open across
  them).
* ``/admin/custody``: sweeps and refills with their state; plan a sweep or ask for a refill
  now (the custody worker's planners, as ``satvault custody sweep`` does); for a refill
  waiting for the cold cosigners, its PSBT as a file (base64 or binary) and the upload of a
  cosigner's signed PSBT, merged and, once complete, finalized by
  :func:`satvault.custody.ceremony.import_signatures` (``satvault cold import``). A PSBT
  that is not the refill's transaction, carries a signature of no cosigner, or is not a PSBT
  at all is refused with the reason, and nothing is stored.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Path, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.audit import record
from satvault.backends.errors import BackendUnavailable
from satvault.composition import reconcile_now
from satvault.custody.ceremony import cold_wallet, import_signatures, refill_for_export
from satvault.custody.cold import read_psbt, signature_count
from satvault.custody.errors import CustodyError
from satvault.custody.status import CustodyStatus, custody_status
from satvault.kernel.errors import InvalidInput, SatvaultError
from satvault.payouts.models import BatchStatus, MoveKind, PayoutBatch
from satvault.reconcile.models import ReconciliationRun
from satvault.reconcile.service import open_incidents
from satvault.web.pages.admin._views import bar_chart, coverage_percent
from satvault.web.pages.deps import CsrfProtected, PageAdmin, PageLang, admin_principal, mark_page
from satvault.web.pages.render import render
from satvault.web.problems import problem_for
from satvault.web.state import runtime_of, sessions_of, settings_of

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_page)])
MSAT = 1000
MAX_PSBT_BYTES = 1_000_000
BatchId = Annotated[str, Path(max_length=40)]


def _status_of(exc: Exception) -> int:
    problem = problem_for(exc)
    return problem.status_code if problem is not None else 422


def _actor(view: Any) -> str:
    p = admin_principal(view)
    return f"{p.owner_type}:{p.owner_id}"


# ------------------------------------------------------------------------------ balances

async def _status(request: Request) -> tuple[CustodyStatus, str | None]:
    """The custody figures through this process's node connections (none: the books only);
    a node that does not answer leaves its column out and says so."""
    sessions = sessions_of(request)
    runtime = runtime_of(request)
    backend = runtime.backend if runtime is not None else None
    lightning = runtime.lightning if runtime is not None else None
    try:
        return await custody_status(sessions, backend, lightning), None
    except BackendUnavailable as exc:
        return await custody_status(sessions, None), str(exc)


async def _last_run(session: AsyncSession) -> tuple[ReconciliationRun | None, dict[str, Any]]:
    run = (await session.execute(select(ReconciliationRun).order_by(
        ReconciliationRun.id.desc()).limit(1))).scalar_one_or_none()
    return run, (json.loads(run.report) if run is not None and run.report else {})


@router.get("/admin/balances", response_class=HTMLResponse)
async def balances(request: Request, view: PageAdmin, lang: PageLang) -> HTMLResponse:
    admin_principal(view)
    status, node_error = await _status(request)  # node calls: no transaction open
    async with sessions_of(request)() as s:
        run, report = await _last_run(s)
        incidents = await open_incidents(s)
    tiers = [("deposit", status.tiers["deposit"]), ("semicold", status.tiers["semicold"]),
             ("cold", status.tiers["cold"])]
    ln_msat = status.lightning["channel_local_msat"] if status.lightning else None
    rows = [(name, t.coins_sat * MSAT, "asset") for name, t in tiers]
    rows.append(("lightning", ln_msat or 0, "asset"))
    rows.append(("liabilities", status.liabilities_msat, "liability"))
    return render(request, "admin/balances.html", lang=lang, view=view, status=status,
                  tiers=tiers, ln_msat=ln_msat, chart=bar_chart(rows),
                  coverage=coverage_percent(status.assets_msat, status.liabilities_msat),
                  node_error=node_error, run=run, report=report, incidents=incidents)


@router.post("/admin/balances/reconcile", dependencies=[CsrfProtected])
async def reconcile(request: Request, view: PageAdmin,
                    deep: Annotated[bool, Form()] = False) -> Response:
    """One reconciliation run, remembered (as the admin API's), then back to the page."""
    admin_principal(view)
    report = await reconcile_now(settings_of(request), sessions_of(request),
                                 runtime=runtime_of(request), deep=deep)
    return RedirectResponse(f"/admin/balances?run={report.run_id}#reconciliation",
                            status_code=303)


# ------------------------------------------------------------------------ sweeps, refills

async def _custody_page(request: Request, view: Any, lang: Any, *, error: str | None = None,
                        notice: str | None = None, status_code: int = 200,
                        pasted: str = "", failed_batch: str | None = None,
                        done: str | None = None, done_batch: str | None = None
                        ) -> HTMLResponse:
    settings = settings_of(request)
    async with sessions_of(request)() as s:
        batches = list((await s.execute(select(PayoutBatch).where(
            PayoutBatch.kind.in_((MoveKind.SWEEP, MoveKind.REFILL)))
            .order_by(PayoutBatch.created_at.desc(), PayoutBatch.id).limit(50))).scalars())
        signatures: dict[str, Any] = {}
        cosigning = [b for b in batches if b.kind is MoveKind.REFILL
                     and b.status is BatchStatus.COSIGNING]
        if cosigning:
            try:
                wallet = await cold_wallet(s, settings.network)
            except CustodyError:
                wallet = None
            for b in cosigning:
                if wallet is None:
                    continue
                try:
                    counts = signature_count(read_psbt(b.partial_psbt or b.psbt), wallet)
                except CustodyError:
                    continue
                signatures[b.id] = (min((c.valid for c in counts if c.cold), default=0),
                                    wallet.threshold)
    return render(request, "admin/custody.html", lang=lang, view=view, batches=batches,
                  signatures=signatures, error=error, notice=notice, pasted=pasted,
                  failed_batch=failed_batch, has_runtime=runtime_of(request) is not None,
                  done=done, done_batch=done_batch,
                  status_code=status_code)


_DONE = frozenset({"sweep", "refill", "merged", "signed"})
_BATCH = re.compile(r"[a-z]{2,8}_[0-9a-z]{1,32}")


@router.get("/admin/custody", response_class=HTMLResponse)
async def custody(request: Request, view: PageAdmin, lang: PageLang,
                  done: str | None = None, batch: str | None = None) -> HTMLResponse:
    """The page; after an action, ``done`` names what happened to ``batch`` (a fixed set of
    messages: a link cannot make the page say anything else)."""
    admin_principal(view)
    if done not in _DONE or batch is None or not _BATCH.fullmatch(batch):
        done = batch = None
    return await _custody_page(request, view, lang, done=done, done_batch=batch)


def _done(done: str, batch_id: str) -> RedirectResponse:
    return RedirectResponse(f"/admin/custody?done={done}&batch={quote(batch_id, safe='')}",
                            status_code=303)


async def _audit(request: Request, *, actor: str, action: str, object: str,
                 after: dict[str, Any]) -> None:
    async with sessions_of(request)() as s, s.begin():
        await record(s, actor=actor, action=action, object=object, after=after)


@router.post("/admin/custody/sweep", dependencies=[CsrfProtected])
async def plan_sweep(request: Request, view: PageAdmin, lang: PageLang) -> Response:
    """Plan a sweep now, if one is due (``satvault custody sweep``)."""
    actor = _actor(view)
    runtime = runtime_of(request)
    if runtime is None:
        return await _custody_page(request, view, lang, status_code=409, error=(
            "this process has no node connection: plan sweeps with `satvault custody sweep` "
            "or from a process that runs the workers"))
    decision = await runtime.sweeps.step()
    if decision.batch_id is None:  # nothing was due: why, and nothing changed
        return await _custody_page(request, view, lang, notice=decision.reason)
    # The planner committed its own unit of work; who asked for it is recorded next.
    await _audit(request, actor=actor, action="custody.sweep.plan",
                 object=decision.batch_id, after={"reason": decision.reason,
                                                      "fee_sat": decision.fee_sat})
    return _done("sweep", decision.batch_id)


@router.post("/admin/custody/refill", dependencies=[CsrfProtected])
async def ask_refill(request: Request, view: PageAdmin, lang: PageLang) -> Response:
    """Ask the cold cosigners for a refill now, if semi-cold is under its floor (what the
    custody worker does on its own)."""
    actor = _actor(view)
    runtime = runtime_of(request)
    if runtime is None:
        return await _custody_page(request, view, lang, status_code=409, error=(
            "this process has no node connection: refills are raised by the custody worker"))
    decision = await runtime.refills.step()
    if decision.batch_id is None:  # nothing was due: why, and nothing changed
        return await _custody_page(request, view, lang, notice=decision.reason)
    # The planner committed its own unit of work; who asked for it is recorded next.
    await _audit(request, actor=actor, action="custody.refill.request",
                 object=decision.batch_id, after={"amount_sat": decision.amount_sat,
                                                      "fee_sat": decision.fee_sat})
    return _done("refill", decision.batch_id)


@router.get("/admin/custody/{batch_id}/psbt")
async def download_psbt(request: Request, view: PageAdmin, lang: PageLang, batch_id: BatchId,
                        format: str = "base64", signed: bool = False) -> Response:
    """A refill's PSBT for the cosigners (``satvault cold export``): the unsigned one, or
    with ``signed`` the signatures merged so far; base64 text or the binary form."""
    admin_principal(view)
    if format not in ("base64", "binary"):
        raise InvalidInput("format is base64 or binary")
    try:
        async with sessions_of(request)() as s:
            batch = await refill_for_export(s, batch_id=batch_id)
            text = batch.partial_psbt if signed and batch.partial_psbt else batch.psbt
    except CustodyError as exc:  # not a refill, or not waiting for the cosigners
        return await _custody_page(request, view, lang, error=str(exc),
                                   status_code=_status_of(exc))
    stem = f"refill-{batch.id}{'-partial' if signed and batch.partial_psbt else ''}"
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if format == "binary":
        headers["Content-Disposition"] = f'attachment; filename="{stem}.psbt"'
        return Response(base64.b64decode(text), media_type="application/octet-stream",
                        headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="{stem}.psbt.txt"'
    return Response(text + "\n", media_type="text/plain; charset=us-ascii", headers=headers)


@router.post("/admin/custody/{batch_id}/psbt", dependencies=[CsrfProtected])
async def upload_psbt(request: Request, view: PageAdmin, lang: PageLang, batch_id: BatchId,
                      file: Annotated[UploadFile | None, File()] = None,
                      pasted: Annotated[str, Form(max_length=MAX_PSBT_BYTES)] = "") -> Response:
    """A cosigner's signed PSBT (a file, binary or base64, or pasted base64), merged into the
    refill (``satvault cold import``); refused with the reason and nothing stored when it is
    not this refill's transaction or a signature does not verify."""
    actor = _actor(view)
    settings = settings_of(request)
    try:
        name, text = await _psbt_text(file, pasted)
        async with sessions_of(request)() as s, s.begin():
            result = await import_signatures(s, files=[(name, text)], network=settings.network,
                                             batch_id=batch_id)
            await record(s, actor=actor, action="custody.refill.signatures_imported",
                         object=batch_id, after={
                             "complete": result.complete, "txid": result.txid,
                             "inputs": [{"n": c.index, "signatures": c.valid,
                                         "signers": list(c.signers)}
                                        for c in result.signatures]})
    except SatvaultError as exc:
        return await _custody_page(request, view, lang, error=str(exc),
                                   status_code=_status_of(exc), pasted=pasted,
                                   failed_batch=batch_id)
    return _done("signed" if result.complete else "merged", batch_id)


async def _psbt_text(file: UploadFile | None, pasted: str) -> tuple[str, str]:
    if file is not None and file.filename:
        data = await file.read(MAX_PSBT_BYTES + 1)
        if len(data) > MAX_PSBT_BYTES:
            raise InvalidInput("the file is too large for a PSBT")
        name = file.filename[:100]
        if data.startswith(b"psbt\xff"):  # wallets often save the binary form
            return name, base64.b64encode(data).decode()
        try:
            return name, data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{name} is neither a binary PSBT nor base64 text") from exc
    if pasted.strip():
        return "the pasted PSBT", pasted
    raise InvalidInput("choose a signed PSBT file or paste one")
