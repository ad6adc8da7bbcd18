"""``/dashboard``: where a signed-in user lands. The merchant dashboard's pages hang below it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from satvault.accounts.models import Merchant
from satvault.web.deps import SessionDep
from satvault.web.pages.deps import PageLang, PageUser, mark_page
from satvault.web.pages.render import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_page)])


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, view: PageUser, lang: PageLang,
                    session: SessionDep) -> HTMLResponse:
    merchants = list((await session.execute(
        select(Merchant).where(Merchant.owner_user_id == view.user_id).order_by(Merchant.name)
    )).scalars())
    return render(request, "home.html", lang=lang, view=view, merchants=merchants)
