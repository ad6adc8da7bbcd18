"""``/dashboard/m/{merchant_id}/verification``: the merchant's KYC (KYB) tier, the limits
that tier puts on withdrawals (the table the withdrawals check), the history of its KYC
records and upgrade requests, and a form asking for the next tier. The request goes through
the service the owner API (``POST /api/v1/kyc/requests``) calls and waits in the operators'
review queue; one request at a time (the service's rule)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.auth.sessions import SessionView
from satvault.checkout.i18n import Language
from satvault.kernel.errors import SatvaultError
from satvault.web.deps import SessionDep
from satvault.web.pages.deps import CsrfProtected, PageLang, PageUser, mark_page
from satvault.web.pages.merchant.scope import (
    FormRefused,
    Owner,
    form_values,
    owner,
    parse,
    refusal,
    transaction,
)
from satvault.web.pages.render import render
from satvault.web.routes.kyc import UpgradeIn, ask_upgrade, kyc_status
from satvault.web.state import settings_of

__all__ = ["router"]

router = APIRouter(prefix="/dashboard/m/{merchant_id}", include_in_schema=False,
                   dependencies=[Depends(mark_page)])


async def _page(request: Request, lang: Language, view: SessionView, session: AsyncSession,
                who: Owner, *, form: dict[str, Any] | None = None, error: str | None = None,
                notice: str | None = None, status_code: int = 200) -> HTMLResponse:
    status = await kyc_status(session, settings=settings_of(request), owner_type="merchant",
                              owner_id=who.id)
    pending = next((r for r in status["requests"] if r["status"] == "pending"), None)
    return render(request, "merchant/verification.html", lang=lang, view=view,
                  merchant=who.merchant, kyc=status, pending=pending, form=form or {},
                  error=error, notice=notice, status_code=status_code)


@router.get("/verification", response_class=HTMLResponse)
async def verification_page(merchant_id: str, request: Request, view: PageUser,
                            lang: PageLang, session: SessionDep,
                            done: str = "") -> HTMLResponse:
    who = await owner(session, view, merchant_id)
    notice = ("Your request was sent: an operator reviews it." if done == "requested"
              else None)
    return await _page(request, lang, view, session, who, notice=notice)


def _documents(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


@router.post("/verification", dependencies=[CsrfProtected])
async def request_upgrade(merchant_id: str, request: Request, view: PageUser,
                          lang: PageLang) -> Response:
    values = await form_values(request)
    form = {k: str(values.get(k, "")) for k in ("full_name", "documents", "note")}
    try:
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            body = parse(UpgradeIn, {"full_name": form["full_name"].strip(),
                                     "documents": _documents(form["documents"]),
                                     "note": form["note"]})
            await ask_upgrade(s, settings=settings_of(request), owner_type="merchant",
                              owner_id=who.id, body=body, requested_by=view.user_id)
    except (FormRefused, SatvaultError) as exc:
        status, message = refusal(exc)
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            return await _page(request, lang, view, s, who, form=form, error=message,
                               status_code=status)
    return RedirectResponse(f"/dashboard/m/{merchant_id}/verification?done=requested",
                            status_code=303)
