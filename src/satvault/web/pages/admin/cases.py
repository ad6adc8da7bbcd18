"""``/admin/cases`` and ``/admin/approvals``: the risk review queue (list and filter, a
case's history, assign, investigate, notes, attachments by reference, close with a
resolution and a money decision; the case's SAR: draft, read, rewrite the narrative, file
with the authority's reference, download as JSON or PDF) and the withdrawals held for
approvers (approve, reject).
Each action is the risk-case or approval service the admin API calls, as the admin; what
is allowed (who may approve, which money decision fits) is the service's answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Form, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import User
from satvault.kernel.errors import InvalidInput, SatvaultError
from satvault.kernel.retrying import retrying
from satvault.payouts.models import WithdrawalMethod
from satvault.risk import cases, sar
from satvault.risk.models import CaseStatus
from satvault.web.deps import SessionDep
from satvault.web.pages.admin.common import admin_router, case_actor, refusal
from satvault.web.pages.deps import (
    AdminSteppedUp,
    CsrfProtected,
    PageAdmin,
    PageLang,
    admin_principal,
)
from satvault.web.pages.render import render
from satvault.web.routes.risk_cases import follow_up_returned, report_rate
from satvault.web.state import payer_wake_of, sessions_of, settings_of, store_invoice_hook_of
from satvault.withdrawals.policy import approvals
from satvault.withdrawals.review import HeldWithdrawals

__all__ = ["router"]

router = admin_router()
CaseId = Annotated[str, Path(max_length=40)]
WithdrawalId = Annotated[str, Path(max_length=40)]
Version = Annotated[int | None, Form(ge=1, le=2**31 - 1)]
RESOLUTIONS = ("confirmed_risk", "false_positive")
MONEY = ("", "release", "return", "none")


async def _admins(session: AsyncSession) -> list[User]:
    return list((await session.execute(select(User).where(User.is_admin.is_(True))
                                       .order_by(User.email))).scalars())


@router.get("/cases", response_class=HTMLResponse)
async def list_cases(request: Request, view: PageAdmin, lang: PageLang, session: SessionDep,
                     status: Annotated[str, Query(max_length=20)] = "open",
                     assignee: Annotated[str, Query(max_length=40)] = "",
                     wallet_id: Annotated[str, Query(max_length=40)] = "") -> HTMLResponse:
    """``status`` ``open`` (the default: pending and investigating), ``all`` or one status."""
    wanted = CaseStatus(status) if status in {s.value for s in CaseStatus} else None
    rows = await cases.list_cases(session, status=wanted, assignee=assignee or None,
                                  wallet_id=wallet_id or None, limit=500)
    if status == "open":
        rows = [r for r in rows if r["status"] != CaseStatus.CLOSED.value]
    return render(request, "admin/cases.html", lang=lang, view=view, rows=rows,
                  status=status, assignee=assignee, wallet_id=wallet_id,
                  statuses=[s.value for s in CaseStatus], admins=await _admins(session))


async def _case_page(request: Request, view: PageAdmin, lang: PageLang, session: AsyncSession,
                     case_id: str, *, status_code: int = 200, error: str | None = None,
                     form: dict[str, str] | None = None, done: str | None = None
                     ) -> HTMLResponse:
    case = await cases.get_case(session, case_id)
    report = await sar.get_sar(session, case_id) if case.get("sar") else None
    return render(request, "admin/case.html", lang=lang, view=view, c=case, sar=report,
                  admins=await _admins(session), resolutions=RESOLUTIONS, error=error,
                  form=form or {}, done=done, status_code=status_code)


@router.get("/cases/{case_id}", response_class=HTMLResponse)
async def case_detail(request: Request, case_id: CaseId, view: PageAdmin, lang: PageLang,
                      session: SessionDep,
                      done: Annotated[str | None, Query(max_length=20)] = None
                      ) -> HTMLResponse:
    return await _case_page(request, view, lang, session, case_id, done=done)


async def _act(request: Request, view: PageAdmin, lang: PageLang, case_id: str, done: str,
               work: Callable[[AsyncSession, str], Awaitable[Any]],
               form: dict[str, str]) -> Response:
    """Run one case action in its own unit of work; a refusal re-renders the case with the
    message (nothing changed), success goes back to the case."""
    actor = case_actor(admin_principal(view))
    try:  # run again on a deadlock with a concurrent decision on the same wallet (as the API)
        result = await retrying(sessions_of(request), lambda s: work(s, actor))
    except SatvaultError as exc:
        status, message = refusal(exc)
        async with sessions_of(request)() as s:
            return await _case_page(request, view, lang, s, case_id, status_code=status,
                                    error=message, form=form)
    if getattr(result, "wake_payer", False):
        wake = payer_wake_of(request)
        if wake is not None:
            wake.set()
    if isinstance(result, cases.CaseDecided):
        await follow_up_returned(request, result)
    return RedirectResponse(f"/admin/cases/{case_id}?done={done}", status_code=303)


@router.post("/cases/{case_id}/assign", dependencies=[CsrfProtected])
async def assign(request: Request, case_id: CaseId, view: PageAdmin, lang: PageLang,
                 assignee: Annotated[str, Form(max_length=40)],
                 expected_version: Version = None) -> Response:
    return await _act(request, view, lang, case_id, "assigned", lambda s, actor: cases.assign(
        s, case_id=case_id, assignee=assignee, actor=actor,
        expected_version=expected_version), {"assignee": assignee})


@router.post("/cases/{case_id}/investigate", dependencies=[CsrfProtected])
async def investigate(request: Request, case_id: CaseId, view: PageAdmin, lang: PageLang,
                      expected_version: Version = None) -> Response:
    return await _act(request, view, lang, case_id, "investigating",
                      lambda s, actor: cases.investigate(s, case_id=case_id, actor=actor,
                                                         expected_version=expected_version),
                      {})


@router.post("/cases/{case_id}/notes", dependencies=[CsrfProtected])
async def add_note(request: Request, case_id: CaseId, view: PageAdmin, lang: PageLang,
                   text: Annotated[str, Form(max_length=10_000)] = "") -> Response:
    return await _act(request, view, lang, case_id, "noted", lambda s, actor: cases.add_note(
        s, case_id=case_id, text=text, actor=actor), {"note_text": text})


@router.post("/cases/{case_id}/attachments", dependencies=[CsrfProtected])
async def attach(request: Request, case_id: CaseId, view: PageAdmin, lang: PageLang,
                 uri: Annotated[str, Form(max_length=2000)] = "",
                 sha256: Annotated[str, Form(max_length=64)] = "",
                 description: Annotated[str, Form(max_length=2000)] = "") -> Response:
    return await _act(request, view, lang, case_id, "attached", lambda s, actor: cases.attach(
        s, case_id=case_id, uri=uri, sha256=sha256, description=description, actor=actor),
        {"uri": uri, "sha256": sha256, "description": description})


@router.post("/cases/{case_id}/close", dependencies=[CsrfProtected])
async def close(request: Request, case_id: CaseId, view: AdminSteppedUp, lang: PageLang,
                resolution: Annotated[str, Form(max_length=20)] = "",
                money: Annotated[str, Form(max_length=10)] = "",
                note: Annotated[str, Form(max_length=10_000)] = "",
                expected_version: Version = None) -> Response:
    held = HeldWithdrawals(settings_of(request), store_invoice_hook_of(request))

    async def work(s: AsyncSession, actor: str) -> cases.CaseDecided:
        if resolution not in RESOLUTIONS or money not in MONEY:
            raise InvalidInput("choose a resolution (confirmed risk or false positive) and "
                               "a money decision")
        return await cases.close_case(s, case_id=case_id, resolution=resolution,
                                      money=money or None, note=note, actor=actor, held=held,
                                      expected_version=expected_version)
    return await _act(request, view, lang, case_id, "closed", work,
                      {"resolution": resolution, "money": money, "close_note": note})


# ------------------------------------------------------------------ the case's SAR


@router.post("/cases/{case_id}/sar", dependencies=[CsrfProtected])
async def draft_sar(request: Request, case_id: CaseId, view: PageAdmin,
                    lang: PageLang) -> Response:
    admin_principal(view)
    rate = await report_rate(request)  # before the unit of work opens (a network call)
    return await _act(request, view, lang, case_id, "sar-drafted",
                      lambda s, actor: sar.generate_sar(s, case_id=case_id, actor=actor,
                                                        rate=rate), {})


@router.post("/cases/{case_id}/sar/narrative", dependencies=[CsrfProtected])
async def edit_narrative(request: Request, case_id: CaseId, view: PageAdmin, lang: PageLang,
                         narrative: Annotated[str, Form(max_length=20_000)] = "") -> Response:
    return await _act(request, view, lang, case_id, "sar-edited",
                      lambda s, actor: sar.edit_narrative(s, case_id=case_id,
                                                          narrative=narrative, actor=actor),
                      {"narrative": narrative})


@router.post("/cases/{case_id}/sar/file", dependencies=[CsrfProtected])
async def file_sar(request: Request, case_id: CaseId, view: PageAdmin, lang: PageLang,
                   reference: Annotated[str, Form(max_length=120)] = "") -> Response:
    return await _act(request, view, lang, case_id, "sar-filed",
                      lambda s, actor: sar.file_sar(s, case_id=case_id, reference=reference,
                                                    actor=actor),
                      {"reference": reference})


@router.get("/cases/{case_id}/sar.json")
async def sar_json(case_id: CaseId, view: PageAdmin, session: SessionDep) -> Response:
    """The SAR as the API's ``GET …/sar`` answers it, as a download."""
    admin_principal(view)
    body = await sar.get_sar(session, case_id)
    return JSONResponse(body, headers={
        "Content-Disposition": f'attachment; filename="{body["id"]}.json"'})


@router.get("/cases/{case_id}/sar.pdf")
async def sar_pdf(case_id: CaseId, view: PageAdmin, session: SessionDep) -> Response:
    """The SAR as the API's ``GET …/sar?format=pdf`` renders it."""
    admin_principal(view)
    body = await sar.get_sar(session, case_id)
    return Response(sar.sar_pdf(body), media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{body["id"]}.pdf"'})


# ------------------------------------------------------------------ withdrawal approvals


async def _approvals_page(request: Request, view: PageAdmin, lang: PageLang,
                          session: AsyncSession, *, status_code: int = 200,
                          error: str | None = None, done: str | None = None) -> HTMLResponse:
    waiting = await approvals.awaiting(session, limit=200)
    people = {w for _wd, req, who in waiting for w in (*who, req.initiator) if w}
    emails = {u.id: u.email for u in (await session.execute(
        select(User).where(User.id.in_(people)))).scalars()} if people else {}
    rows = [{"wd": wd, "req": req, "approved_by": who} for wd, req, who in waiting]
    return render(request, "admin/approvals.html", lang=lang, view=view, rows=rows,
                  emails=emails, error=error, done=done, status_code=status_code)


@router.get("/approvals", response_class=HTMLResponse)
async def list_approvals(request: Request, view: PageAdmin, lang: PageLang,
                         session: SessionDep,
                         done: Annotated[str | None, Query(max_length=20)] = None
                         ) -> HTMLResponse:
    return await _approvals_page(request, view, lang, session, done=done)


@router.post("/approvals/{withdrawal_id}/approve", dependencies=[CsrfProtected])
async def approve(request: Request, withdrawal_id: WithdrawalId, view: AdminSteppedUp,
                  lang: PageLang) -> Response:
    """An approval releases money: a step-up first, as for a withdrawal (found from outside:
    a plain admin session approved, where the API asks for the money scope)."""
    principal = admin_principal(view)
    try:
        # Its own unit of work, committed before the payer is woken, run again on a
        # deadlock (as the API does).
        outcome = await retrying(sessions_of(request), lambda s: approvals.approve_withdrawal(
            s, withdrawal_id=withdrawal_id, approver=principal.owner_id,
            settings=settings_of(request)))
    except SatvaultError as exc:
        status, message = refusal(exc)
        async with sessions_of(request)() as s:
            return await _approvals_page(request, view, lang, s, status_code=status,
                                         error=message)
    if outcome.released and outcome.method == WithdrawalMethod.LIGHTNING:
        wake = payer_wake_of(request)
        if wake is not None:
            wake.set()
    done = "released" if outcome.released else "approved"
    return RedirectResponse(f"/admin/approvals?done={done}", status_code=303)


@router.post("/approvals/{withdrawal_id}/reject", dependencies=[CsrfProtected])
async def reject(request: Request, withdrawal_id: WithdrawalId, view: PageAdmin,
                 lang: PageLang, reason: Annotated[str, Form(max_length=500)] = ""
                 ) -> Response:
    principal = admin_principal(view)
    try:
        await retrying(sessions_of(request), lambda s: approvals.reject_withdrawal(
            s, withdrawal_id=withdrawal_id, approver=principal.owner_id, reason=reason))
    except SatvaultError as exc:
        status, message = refusal(exc)
        async with sessions_of(request)() as s:
            return await _approvals_page(request, view, lang, s, status_code=status,
                                         error=message)
    return RedirectResponse("/admin/approvals?done=rejected", status_code=303)
