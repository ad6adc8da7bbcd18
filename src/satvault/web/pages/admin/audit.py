"""``/admin/audit``: the hash-chained audit log, filtered by actor, action, object and time,
newest first; and its verification (the audit API's: seal what is pending, then walk the
whole chain), whose result says ok or names the first broken row."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from satvault.audit.service import list_events, seal_all, verify
from satvault.kernel.days import day_end, day_start
from satvault.kernel.errors import InvalidInput
from satvault.web.deps import SessionDep
from satvault.web.pages.admin.common import admin_router
from satvault.web.pages.deps import CsrfProtected, PageAdmin, PageLang
from satvault.web.pages.render import render
from satvault.web.state import sessions_of

__all__ = ["router"]

router = admin_router()
PAGE = 100


def _day(value: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not a day (YYYY-MM-DD)") from None


@router.get("/audit", response_class=HTMLResponse)
async def audit_log(request: Request, view: PageAdmin, lang: PageLang, session: SessionDep,
                    actor: Annotated[str, Query(max_length=80)] = "",
                    action: Annotated[str, Query(max_length=80)] = "",
                    object: Annotated[str, Query(max_length=120)] = "",
                    since_day: Annotated[str, Query(alias="from", max_length=10)] = "",
                    until_day: Annotated[str, Query(alias="to", max_length=10)] = "",
                    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
                    ) -> HTMLResponse:
    """``from``/``to`` are UTC days, both included; ``before`` pages to older rows."""
    since, until = _day(since_day), _day(until_day)
    rows = await list_events(
        session, actor=actor or None, action=action or None, object=object or None,
        since=day_start(since), until=day_end(until),
        before=before, limit=PAGE, newest_first=True)
    filters = {"actor": actor, "action": action, "object": object,
               "from": since.isoformat() if since else "",
               "to": until.isoformat() if until else ""}
    older = rows[-1]["id"] if len(rows) == PAGE else None
    return render(request, "admin/audit.html", lang=lang, view=view, rows=rows,
                  filters=filters, older=older, result=None)


@router.post("/audit/verify", response_class=HTMLResponse, dependencies=[CsrfProtected])
async def audit_verify(request: Request, view: PageAdmin, lang: PageLang) -> HTMLResponse:
    """As ``GET /api/v1/admin/audit/verify``: its own transactions, none held meanwhile."""
    sessions = sessions_of(request)
    await seal_all(sessions, fence_timeout=5.0)
    async with sessions() as s, s.begin():
        result = (await verify(s)).as_dict()
    async with sessions() as s:
        rows = await list_events(s, limit=PAGE, newest_first=True)
    filters = {"actor": "", "action": "", "object": "", "from": "", "to": ""}
    return render(request, "admin/audit.html", lang=lang, view=view, rows=rows,
                  filters=filters, older=None, result=result)
