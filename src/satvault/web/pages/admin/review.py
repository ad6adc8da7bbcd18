"""``/admin/review``: the review items (what the platform met and a person must look at: a
deposit nobody owns, a stuck payout, a reconciliation difference …), newest first, by kind
and status, each with its details, resolved once with a note through the service the admin
API and ``satvault review`` use (a conditional update: two operators resolving the same
item at once, one is told who was first; audited)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.kernel.errors import SatvaultError
from satvault.onchain.models import ReviewKind
from satvault.reconcile import review
from satvault.web.deps import SessionDep
from satvault.web.pages.admin.common import admin_router, case_actor, refusal
from satvault.web.pages.deps import CsrfProtected, PageAdmin, PageLang, admin_principal
from satvault.web.pages.render import render
from satvault.web.state import sessions_of

__all__ = ["router"]

router = admin_router()
ItemId = Annotated[int, Path(ge=1, le=2**63 - 1)]
KINDS = tuple(k.value for k in ReviewKind)


def _shown(details: Any) -> str:
    """An item's details as a person reads them: indented JSON, or the text as written."""
    return details if isinstance(details, str) else json.dumps(details, indent=2,
                                                               sort_keys=True)


@router.get("/review", response_class=HTMLResponse)
async def list_review(request: Request, view: PageAdmin, lang: PageLang, session: SessionDep,
                      status: Literal["open", "resolved", "all"] = "open",
                      kind: Annotated[str, Query(max_length=40)] = "",
                      cursor: Annotated[str | None, Query(max_length=40)] = None,
                      done: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
                      ) -> HTMLResponse:
    page = await review.list_items(session, kind=kind or None, status=status, limit=100,
                                   cursor=cursor)
    return render(request, "admin/review.html", lang=lang, view=view, rows=page["items"],
                  next_cursor=page["next_cursor"], status=status, kind=kind, kinds=KINDS,
                  done=done)


async def _item_page(request: Request, view: PageAdmin, lang: PageLang,
                     session: AsyncSession, item_id: int, *, status_code: int = 200,
                     error: str | None = None, note: str = "") -> HTMLResponse:
    item = await review.get_item(session, item_id)
    return render(request, "admin/review_item.html", lang=lang, view=view, item=item,
                  details=_shown(item["details"]), error=error, note=note,
                  max_note=review.MAX_NOTE, status_code=status_code)


@router.get("/review/{item_id}", response_class=HTMLResponse)
async def review_item(request: Request, item_id: ItemId, view: PageAdmin, lang: PageLang,
                      session: SessionDep) -> HTMLResponse:
    return await _item_page(request, view, lang, session, item_id)


@router.post("/review/{item_id}/resolve", dependencies=[CsrfProtected])
async def resolve(request: Request, item_id: ItemId, view: PageAdmin, lang: PageLang,
                  note: Annotated[str, Form(max_length=review.MAX_NOTE + 100)] = ""
                  ) -> Response:
    """Resolve the item with the note; a refusal (no note, resolved already) shows the item
    again with the reason and the note as typed, nothing changed."""
    actor = case_actor(admin_principal(view))
    try:
        async with sessions_of(request)() as s, s.begin():
            await review.resolve_item(s, item_id=item_id, actor=actor, note=note)
    except SatvaultError as exc:
        code, message = refusal(exc)
        async with sessions_of(request)() as s:
            return await _item_page(request, view, lang, s, item_id, status_code=code,
                                    error=message, note=note)
    return RedirectResponse(f"/admin/review?done={item_id}", status_code=303)
