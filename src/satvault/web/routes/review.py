"""Review items for operators (admin scope): the list (by kind, open or resolved, paged with
a cursor), one item, and resolving one with a note. The work is
:mod:`satvault.reconcile.review`'s."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from satvault.accounts.service import Principal
from satvault.reconcile import review
from satvault.web.deps import SessionDep, require_scope, user_of
from satvault.web.fields import STRICT_BODY
from satvault.web.openapi import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin/review-items", tags=["admin"],
                   responses=problem_responses(403, 404, 409, 422))
Admin = Annotated[Principal, Depends(require_scope("admin"))]
ItemId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A review item's id.")]


class ResolveIn(BaseModel):
    model_config = STRICT_BODY
    note: str = Field(min_length=1, max_length=review.MAX_NOTE,
                      description="What was done about it (required; kept and audited).")


def _actor(p: Principal) -> str:
    return f"user:{user_of(p, 'review item resolutions')}"


@router.get("")
async def list_review_items(
    session: SessionDep, _admin: Admin,
    kind: Annotated[str | None, Query(max_length=40, description="Only this kind.")] = None,
    status: Literal["open", "resolved", "all"] = "open",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=40, description="A page's `next_cursor`.")]
    = None,
) -> dict[str, Any]:
    """Review items, newest first: ``{"items": [...], "next_cursor": …}``; pass
    ``next_cursor`` back for the next page (null on the last)."""
    return await review.list_items(session, kind=kind, status=status, limit=limit,
                                   cursor=cursor)


@router.get("/{item_id}")
async def get_review_item(item_id: ItemId, session: SessionDep, _admin: Admin
                          ) -> dict[str, Any]:
    return await review.get_item(session, item_id)


@router.post("/{item_id}/resolve")
async def resolve_review_item(item_id: ItemId, body: ResolveIn, session: SessionDep,
                              admin: Admin) -> dict[str, Any]:
    """Resolve an open item once, with a note; audited. An item resolved already (by
    anyone, a moment ago too) is a 409 that says by whom and when; nothing changes."""
    return await review.resolve_item(session, item_id=item_id, actor=_actor(admin),
                                     note=body.note)
