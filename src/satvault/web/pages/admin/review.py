"""``/admin/review``: the review items (what the platform met and a person must look at: a
deposit nobody owns, a stuck payout, a reconciliation difference …), newest first, by kind
and status, each with its details, resolved once with a note through the service the admin
API and ``satvault review`` use (a conditional update: two operators resolving the same
item at once, one is told who was first; audited). A ``payout_stuck`` item's batch is
resolved on its page as ``satvault payouts resolve`` and the admin API resolve it (re-queue,
return, paid by a transaction), or, when it names a sweep or refill, as ``satvault custody
resolve`` does (abandon, confirmed by a transaction), only as far as the chain node proves
it safe; that resolves the item with the same note."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.backends.errors import BackendUnavailable
from satvault.kernel.errors import InvalidInput, SatvaultError
from satvault.onchain.models import ReviewKind
from satvault.payouts.models import MoveKind, PayoutBatch
from satvault.reconcile import review, stuck, stuck_moves
from satvault.signing.errors import SignerError
from satvault.web.deps import SessionDep
from satvault.web.pages.admin.common import admin_router, case_actor, refusal
from satvault.web.pages.deps import CsrfProtected, PageAdmin, PageLang, admin_principal
from satvault.web.pages.render import render
from satvault.web.state import runtime_of, sessions_of, settings_of

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


async def _stuck_move(session: AsyncSession, item: dict[str, Any]) -> bool:
    """Whether a ``payout_stuck`` item names a sweep or a refill (resolved as a custody
    move), not a payout batch."""
    if item["kind"] != ReviewKind.PAYOUT_STUCK.value:
        return False
    kind = (await session.execute(select(PayoutBatch.kind).where(
        PayoutBatch.id == item["subject"]))).scalar_one_or_none()
    return kind in (MoveKind.SWEEP, MoveKind.REFILL)


async def _item_page(request: Request, view: PageAdmin, lang: PageLang,
                     session: AsyncSession, item_id: int, *, status_code: int = 200,
                     error: str | None = None, note: str = "",
                     form: dict[str, str] | None = None) -> HTMLResponse:
    item = await review.get_item(session, item_id)
    move = await _stuck_move(session, item)
    return render(request, "admin/review_item.html", lang=lang, view=view, item=item,
                  details=_shown(item["details"]), error=error, note=note,
                  max_note=review.MAX_NOTE, status_code=status_code, form=form or {},
                  batch=item["kind"] == ReviewKind.PAYOUT_STUCK.value and not move,
                  move=move)


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


@router.post("/review/{item_id}/resolve-batch", dependencies=[CsrfProtected])
async def resolve_batch(request: Request, item_id: ItemId, view: PageAdmin, lang: PageLang,
                        action: Annotated[str, Form(max_length=10)] = "",
                        txid: Annotated[str, Form(max_length=80)] = "",
                        rest: Annotated[str, Form(max_length=10)] = "",
                        note: Annotated[str, Form(max_length=review.MAX_NOTE + 100)] = ""
                        ) -> Response:
    """The stuck batch a ``payout_stuck`` item names, resolved as the admin API resolves it:
    the node (and the signer, to give versions up) asked first with no transaction open,
    then the batch changed in one unit of work; a refusal shows the item again, nothing
    changed."""
    actor = case_actor(admin_principal(view))
    runtime = runtime_of(request)
    form = {"action": action, "txid": txid, "rest": rest}
    try:
        async with sessions_of(request)() as s:
            item = await review.get_item(s, item_id)
        if item["kind"] != ReviewKind.PAYOUT_STUCK.value:
            raise InvalidInput("only a payout_stuck item names a batch to resolve")
        if runtime is None:
            raise BackendUnavailable("this process has no chain backend or signer")
        proof = await stuck.prepare(
            sessions_of(request), backend=runtime.backend, signer=runtime.signer,
            settings=settings_of(request), batch_id=item["subject"], action=action,
            note=note, actor=actor, txid=txid.strip().lower() or None, rest=rest or None)
        async with sessions_of(request)() as s, s.begin():
            await stuck.resolve(s, proof, actor=actor, note=note)
    except (SatvaultError, SignerError) as exc:
        code, message = (refusal(exc) if isinstance(exc, SatvaultError) else (503, str(exc)))
        async with sessions_of(request)() as s:
            return await _item_page(request, view, lang, s, item_id, status_code=code,
                                    error=message, note=note, form=form)
    return RedirectResponse(f"/admin/review?done={item_id}", status_code=303)


@router.post("/review/{item_id}/resolve-move", dependencies=[CsrfProtected])
async def resolve_move(request: Request, item_id: ItemId, view: PageAdmin, lang: PageLang,
                       action: Annotated[str, Form(max_length=20)] = "",
                       txid: Annotated[str, Form(max_length=80)] = "",
                       note: Annotated[str, Form(max_length=review.MAX_NOTE + 100)] = ""
                       ) -> Response:
    """The stuck sweep or refill a ``payout_stuck`` item names, resolved as the admin API
    resolves it: the node asked first with no transaction open, then the move changed in
    one unit of work; a refusal shows the item again, nothing changed."""
    actor = case_actor(admin_principal(view))
    runtime = runtime_of(request)
    form = {"action": action, "txid": txid}
    try:
        async with sessions_of(request)() as s:
            item = await review.get_item(s, item_id)
            if not await _stuck_move(s, item):
                raise InvalidInput("only a payout_stuck item naming a sweep or refill names a "
                                   "move to resolve")
        if runtime is None:
            raise BackendUnavailable("this process has no chain backend")
        proof = await stuck_moves.prepare(
            sessions_of(request), backend=runtime.backend, settings=settings_of(request),
            batch_id=item["subject"], action=action, note=note,
            txid=txid.strip().lower() or None)
        async with sessions_of(request)() as s, s.begin():
            await stuck_moves.resolve(s, proof, actor=actor, note=note)
    except SatvaultError as exc:
        code, message = refusal(exc)
        async with sessions_of(request)() as s:
            return await _item_page(request, view, lang, s, item_id, status_code=code,
                                    error=message, note=note, form=form)
    return RedirectResponse(f"/admin/review?done={item_id}", status_code=303)
