"""The risk review queue for operators (admin scope): list and read cases, assign them,
start investigating, add notes and attachments (by reference), close them with a resolution
and a money decision, and draft, edit, file and export their SARs.

Closing a case is the only way money a review decision held moves; it runs in its own unit
of work, committed before the Lightning payer is woken for a released payment.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from satvault.accounts.service import Principal
from satvault.kernel.errors import SatvaultError
from satvault.kernel.retrying import retrying
from satvault.logs import get_logger
from satvault.rates.base import Rate
from satvault.rates.service import comparing_rate_service
from satvault.risk import cases, sar
from satvault.risk.models import CaseStatus
from satvault.web.deps import SessionDep, require_scope, user_of
from satvault.web.openapi import problem_responses
from satvault.web.schemas.risk_cases import (
    AssignIn,
    AttachIn,
    CloseIn,
    FileIn,
    NarrativeIn,
    NoteIn,
    VersionIn,
)
from satvault.web.state import (
    invoice_follow_up_of,
    payer_wake_of,
    runtime_of,
    sessions_of,
    settings_of,
    store_invoice_hook_of,
)
from satvault.withdrawals.review import HeldWithdrawals

__all__ = ["follow_up_returned", "report_rate", "router"]

log = get_logger(__name__)

router = APIRouter(prefix="/api/v1/admin/risk/cases", tags=["admin", "risk"],
                   responses=problem_responses(403, 404, 409, 422))
Admin = Annotated[Principal, Depends(require_scope("admin"))]
# Closing a case decides its money (release a held withdrawal, return or keep it): the money
# scope too, which an admin's access token carries only after a step-up.
MoneyAdmin = Annotated[Principal, Depends(require_scope("admin", "withdrawals:write"))]
CaseId = Annotated[str, Path(max_length=40)]
_PDF = {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}


def _actor(p: Principal) -> str:
    return f"user:{user_of(p, 'case decisions')}"


@router.get("")
async def list_cases(
    session: SessionDep, _admin: Admin,
    status: CaseStatus | None = None,
    assignee: Annotated[str | None, Query(max_length=40)] = None,
    wallet_id: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Cases, newest first, filtered by status, assignee (an admin user id) or wallet."""
    return await cases.list_cases(session, status=status, assignee=assignee,
                                  wallet_id=wallet_id, limit=limit)


@router.get("/{case_id}")
async def get_case(case_id: CaseId, session: SessionDep, _admin: Admin) -> dict[str, Any]:
    """The case, its decision, its history (events in order) and its SAR, if any."""
    return await cases.get_case(session, case_id)


@router.post("/{case_id}/assign")
async def assign(case_id: CaseId, body: AssignIn, session: SessionDep,
                 admin: Admin) -> dict[str, Any]:
    return await cases.assign(session, case_id=case_id, assignee=body.assignee,
                              actor=_actor(admin), expected_version=body.expected_version)


@router.post("/{case_id}/investigate")
async def investigate(case_id: CaseId, session: SessionDep, admin: Admin,
                      body: VersionIn | None = None) -> dict[str, Any]:
    """``pending`` → ``investigating`` (an unassigned case goes to the acting admin); the
    body is optional."""
    return await cases.investigate(session, case_id=case_id, actor=_actor(admin),
                                   expected_version=(body or VersionIn()).expected_version)


@router.post("/{case_id}/notes", status_code=201)
async def add_note(case_id: CaseId, body: NoteIn, session: SessionDep,
                   admin: Admin) -> dict[str, Any]:
    return await cases.add_note(session, case_id=case_id, text=body.text, actor=_actor(admin))


@router.post("/{case_id}/attachments", status_code=201)
async def attach(case_id: CaseId, body: AttachIn, session: SessionDep,
                 admin: Admin) -> dict[str, Any]:
    """An attachment by reference: its URI and SHA-256 (the file is kept elsewhere)."""
    return await cases.attach(session, case_id=case_id, uri=body.uri, sha256=body.sha256,
                              description=body.description, actor=_actor(admin))


@router.post("/{case_id}/close")
async def close(case_id: CaseId, body: CloseIn, request: Request,
                admin: MoneyAdmin) -> dict[str, Any]:
    """Decide the case: resolution and money. The same decision again answers with the
    stored outcome (``acted: false``) and moves nothing."""
    actor = _actor(admin)
    held = HeldWithdrawals(settings_of(request), store_invoice_hook_of(request))
    # Run again on a deadlock (found from outside: cases of one wallet closed at once).
    decided = await retrying(sessions_of(request), lambda session: cases.close_case(
        session, case_id=case_id, resolution=body.resolution, money=body.money,
        note=body.note, actor=actor, held=held, expected_version=body.expected_version))
    if decided.wake_payer:
        wake = payer_wake_of(request)
        if wake is not None:
            wake.set()
    await follow_up_returned(request, decided)
    return {**decided.case, "acted": decided.acted, "effect": decided.effect}


async def follow_up_returned(request: Request, decided: cases.CaseDecided) -> None:
    """A returned internal payment cancelled its store invoice's BOLT11: a fresh one for
    what is due, now that the case's transaction committed."""
    store_invoice_id = decided.effect.get("store_invoice_id")
    follow_up = invoice_follow_up_of(request)
    if store_invoice_id and follow_up is not None:
        await follow_up(store_invoice_id)


async def report_rate(request: Request) -> Rate | None:
    """The report currency's rate if one is at hand (before any transaction opens)."""
    settings = settings_of(request)
    runtime = runtime_of(request)
    own = runtime is None or getattr(runtime, "rates", None) is None
    rates = comparing_rate_service(settings) if own else runtime.rates
    try:
        return await rates.rate(settings.report_currency)
    except SatvaultError as exc:  # a SAR is drafted without fiat amounts
        log.warning("sar_without_rate", error=str(exc))
        return None
    finally:
        if own:
            await rates.close()


@router.post("/{case_id}/sar", status_code=201)
async def generate_sar(case_id: CaseId, request: Request, admin: Admin) -> dict[str, Any]:
    """Draft the case's SAR (once: a second call answers with the draft there is)."""
    actor = _actor(admin)
    rate = await report_rate(request)
    async with sessions_of(request)() as session, session.begin():
        return await sar.generate_sar(session, case_id=case_id, actor=actor, rate=rate)


@router.get("/{case_id}/sar", response_model=None,
            responses={200: {"description": "The SAR: JSON, or a PDF with `format=pdf`.",
                             "content": _PDF}})
async def get_sar(case_id: CaseId, session: SessionDep, _admin: Admin,
                  format: Literal["json", "pdf"] = "json") -> Any:
    body = await sar.get_sar(session, case_id)
    if format == "pdf":
        return Response(sar.sar_pdf(body), media_type="application/pdf", headers={
            "Content-Disposition": f'attachment; filename="{body["id"]}.pdf"'})
    return body


@router.put("/{case_id}/sar/narrative")
async def edit_narrative(case_id: CaseId, body: NarrativeIn, session: SessionDep,
                         admin: Admin) -> dict[str, Any]:
    """Rewrite a draft's narrative (each version is kept in the case's history)."""
    return await sar.edit_narrative(session, case_id=case_id, narrative=body.narrative,
                                    actor=_actor(admin))


@router.post("/{case_id}/sar/file")
async def file_sar(case_id: CaseId, body: FileIn, session: SessionDep,
                   admin: Admin) -> dict[str, Any]:
    """``draft`` → ``filed`` with the authority's reference; then it does not change."""
    return await sar.file_sar(session, case_id=case_id, reference=body.reference,
                              actor=_actor(admin))
