"""``/admin/kyc``: the KYC review queue — pending requests for a higher tier, each with the
owner's current tier and KYC history — approved or rejected with a note through the KYC
service the admin API uses (the decision is a new KYC record: the history is kept)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, User
from satvault.kernel.errors import InvalidInput, SatvaultError
from satvault.kyc import requests as kyc_requests
from satvault.kyc import service as kyc
from satvault.web.deps import SessionDep
from satvault.web.pages.admin.common import admin_router, refusal
from satvault.web.pages.deps import CsrfProtected, PageAdmin, PageLang, admin_principal
from satvault.web.pages.render import render
from satvault.web.state import sessions_of, settings_of

__all__ = ["CHECKS", "router"]

router = admin_router()
RequestId = Annotated[str, Path(max_length=40)]
# The checks a reviewer ticks (free text is allowed too, one per line).
CHECKS = ("id-document", "liveness", "proof-of-address", "source-of-funds",
          "business-registration")


async def _owner_label(session: AsyncSession, owner_type: str, owner_id: str) -> str:
    if owner_type == "user":
        u = await session.get(User, owner_id)
        return u.email if u else owner_id
    m = await session.get(Merchant, owner_id)
    return m.name if m else owner_id


@router.get("/kyc", response_class=HTMLResponse)
async def queue(request: Request, view: PageAdmin, lang: PageLang, session: SessionDep,
                done: Annotated[str | None, Query(max_length=20)] = None) -> HTMLResponse:
    rows = []
    for r in await kyc_requests.pending_requests(session):
        rows.append({**kyc_requests.request_dict(r),
                     "label": await _owner_label(session, r.owner_type, r.owner_id),
                     "current": await kyc.tier_of(session, r.owner_type, r.owner_id)})
    return render(request, "admin/kyc.html", lang=lang, view=view, rows=rows, done=done)


async def _detail(request: Request, view: PageAdmin, lang: PageLang, session: AsyncSession,
                  request_id: str, *, status_code: int = 200, error: str | None = None,
                  form: dict[str, object] | None = None) -> HTMLResponse:
    r = await kyc_requests.get_request(session, request_id)
    return render(request, "admin/kyc_request.html", lang=lang, view=view,
                  r=kyc_requests.request_dict(r),
                  label=await _owner_label(session, r.owner_type, r.owner_id),
                  current=await kyc.tier_of(session, r.owner_type, r.owner_id),
                  records=[kyc.record_dict(x) for x in
                           await kyc.history(session, r.owner_type, r.owner_id)],
                  checks=CHECKS, error=error, form=form or {}, status_code=status_code)


@router.get("/kyc/{request_id}", response_class=HTMLResponse)
async def kyc_request(request: Request, request_id: RequestId, view: PageAdmin,
                      lang: PageLang, session: SessionDep) -> HTMLResponse:
    return await _detail(request, view, lang, session, request_id)


@router.post("/kyc/{request_id}/decide", dependencies=[CsrfProtected])
async def decide(request: Request, request_id: RequestId, view: PageAdmin, lang: PageLang,
                 decision: Annotated[str, Form(max_length=10)],
                 checks: Annotated[list[str] | None, Form(max_length=50)] = None,
                 other_checks: Annotated[str, Form(max_length=2000)] = "",
                 notes: Annotated[str, Form(max_length=4000)] = "") -> Response:
    principal = admin_principal(view)
    settings = settings_of(request)
    done = [c.strip()[:300] for c in [*(checks or []), *other_checks.splitlines()]
            if c.strip()]
    try:
        if decision not in ("approve", "reject"):
            raise InvalidInput("decision must be approve or reject")
        async with sessions_of(request)() as s, s.begin():
            r = await kyc_requests.decide_request(
                s, request_id=request_id, decision=decision, reviewer=principal.owner_id,
                checks=done, notes=notes, max_tier=max(settings.kyc_tier_limits_msat),
                screening_threshold=settings.kyc_screening_threshold)
            outcome = r.status.value
    except SatvaultError as exc:
        status, message = refusal(exc)
        async with sessions_of(request)() as s:
            return await _detail(request, view, lang, s, request_id, status_code=status,
                                 error=message, form={"checks": done, "notes": notes,
                                                      "decision": decision})
    return RedirectResponse(f"/admin/kyc?done={outcome}", status_code=303)
