"""``/dashboard``: where a signed-in user lands, with their merchant accounts and a form to
open one (a signed-up user has none until then). The merchant dashboard's pages hang below
it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts import service as accounts
from satvault.accounts.models import Merchant
from satvault.auth.sessions import SessionView
from satvault.checkout.i18n import Language
from satvault.kernel.errors import InvalidInput
from satvault.web.deps import SessionDep
from satvault.web.pages.deps import CsrfProtected, PageCreateLimit, PageLang, PageUser, mark_page
from satvault.web.pages.merchant.scope import transaction
from satvault.web.pages.render import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_page)])


async def _page(request: Request, lang: Language, view: SessionView, session: AsyncSession,
                *, name: str = "", error: str | None = None,
                status_code: int = 200) -> HTMLResponse:
    merchants = list((await session.execute(
        select(Merchant).where(Merchant.owner_user_id == view.user_id).order_by(Merchant.name)
    )).scalars())
    return render(request, "home.html", lang=lang, view=view, merchants=merchants,
                  name=name, error=error, status_code=status_code)


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, view: PageUser, lang: PageLang,
                    session: SessionDep) -> HTMLResponse:
    return await _page(request, lang, view, session)


@router.post("/dashboard/merchants", dependencies=[CsrfProtected, PageCreateLimit])
async def create_merchant(request: Request, view: PageUser, lang: PageLang,
                          name: Annotated[str, Form(max_length=200)]) -> Response:
    """A merchant account owned by the signed-in user (as ``satvault merchant create
    --owner``), then its overview. Spends the creation budget as every other form that
    makes something (found from outside: this one was unlimited)."""
    try:
        async with transaction(request) as s:
            merchant = await accounts.create_merchant(s, name=name, owner_user_id=view.user_id,
                                                      actor=view.user_id)
            target = f"/dashboard/m/{merchant.id}"
    except InvalidInput as exc:
        async with transaction(request) as s:
            return await _page(request, lang, view, s, name=name, error=str(exc),
                               status_code=422)
    return RedirectResponse(target, status_code=303)
