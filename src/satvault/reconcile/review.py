"""Review items: what the platform hands a person (``review_items``, kinds in
:class:`~satvault.onchain.models.ReviewKind`), listed, shown and resolved by an admin.

The code that meets a matter opens its item (the chain watcher, the payout job, the KYC
screening, the refill, the reconciliation); a person handles it outside and resolves it here
with a note saying what was done. Resolving is one conditional UPDATE (``resolved_at IS
NULL``), so of two admins resolving one item at once exactly one does it and the other is
told who did (:class:`~satvault.reconcile.errors.ReviewItemResolved`, a 409); each resolution
is a row of the audit log, in the same unit of work. Nothing else changes: resolving an item
corrects no books and moves no money.

Listing is newest first, by id, paged with a cursor (the last id of a page): items resolved
or opened between two pages neither repeat nor shift the rest.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.audit.service import record
from satvault.db import utcnow
from satvault.kernel.errors import InvalidInput, NotFound
from satvault.ledger.history import InvalidCursor
from satvault.onchain.models import ReviewItem
from satvault.reconcile.errors import ReviewItemResolved

__all__ = ["as_dict", "close_open_items", "get_item", "list_items", "resolution_note",
           "resolve_item"]

Status = Literal["open", "resolved", "all"]
MAX_NOTE = 10_000


def _moment(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _details(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:  # written by hand, say: shown as it is
        return text


def as_dict(item: ReviewItem) -> dict[str, Any]:
    return {"id": item.id, "kind": item.kind, "subject": item.subject,
            "details": _details(item.details),
            "status": "open" if item.resolved_at is None else "resolved",
            "created_at": _moment(item.created_at), "resolved_at": _moment(item.resolved_at),
            "resolved_by": item.resolved_by, "resolution": item.resolution}


def _cursor(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 19 \
            or not 0 < int(text) < 2**63:  # an id column's range
        raise InvalidCursor("invalid cursor")
    return int(text)


async def list_items(session: AsyncSession, *, kind: str | None = None,
                     status: Status = "open", limit: int = 50,
                     cursor: str | None = None) -> dict[str, Any]:
    """``{"items": [...], "next_cursor": …}``: items newest first, of ``kind`` if given, open,
    resolved or all; ``next_cursor`` (None on the last page) gives the next page."""
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500")
    q = select(ReviewItem)
    if kind:
        q = q.where(ReviewItem.kind == kind)
    if status == "open":
        q = q.where(ReviewItem.resolved_at.is_(None))
    elif status == "resolved":
        q = q.where(ReviewItem.resolved_at.is_not(None))
    before = _cursor(cursor)
    if before is not None:
        q = q.where(ReviewItem.id < before)
    rows = (await session.execute(q.order_by(ReviewItem.id.desc()).limit(limit + 1))
            ).scalars().all()
    page = rows[:limit]
    return {"items": [as_dict(i) for i in page],
            "next_cursor": str(page[-1].id) if len(rows) > limit else None}


async def get_item(session: AsyncSession, item_id: int) -> dict[str, Any]:
    item = await session.get(ReviewItem, item_id)
    if item is None:
        raise NotFound(f"review item {item_id} not found")
    return as_dict(item)


def resolution_note(note: str) -> str:
    """A resolution note as kept: stripped; refused blank or longer than ``MAX_NOTE``."""
    note = note.strip()
    if not note:
        raise InvalidInput("resolving a review item needs a note saying what was done")
    if len(note) > MAX_NOTE:
        raise InvalidInput(f"a resolution note is at most {MAX_NOTE} characters")
    return note


async def close_open_items(session: AsyncSession, *, kind: str, subject: str, actor: str,
                           note: str) -> list[int]:
    """Resolve the open items of ``kind`` about ``subject`` with ``note`` (checked by
    :func:`resolution_note`) as part of a bigger change the caller audits; their ids. Each
    is one conditional UPDATE like :func:`resolve_item`'s: one resolved meanwhile by someone
    else is left as they resolved it."""
    open_ids = (await session.execute(select(ReviewItem.id).where(
        ReviewItem.kind == kind, ReviewItem.subject == subject,
        ReviewItem.resolved_at.is_(None)).order_by(ReviewItem.id))).scalars().all()
    closed = []
    for item_id in open_ids:
        res = await session.execute(update(ReviewItem).where(
            ReviewItem.id == item_id, ReviewItem.resolved_at.is_(None),
        ).values(resolved_at=utcnow(), resolved_by=actor[:80], resolution=note))
        if res.rowcount == 1:  # type: ignore[attr-defined]
            closed.append(item_id)
    return closed


async def resolve_item(session: AsyncSession, *, item_id: int, actor: str,
                       note: str) -> dict[str, Any]:
    """Resolve an open item once, with ``note`` (what was done; required) by ``actor``
    (``user:<id>``), audited. Raises :class:`ReviewItemResolved` if it was resolved already,
    by this call's twin too."""
    note = resolution_note(note)
    res = await session.execute(update(ReviewItem).where(
        ReviewItem.id == item_id, ReviewItem.resolved_at.is_(None),
    ).values(resolved_at=utcnow(), resolved_by=actor[:80], resolution=note))
    item = await session.get(ReviewItem, item_id, populate_existing=True)
    if item is None:
        raise NotFound(f"review item {item_id} not found")
    if res.rowcount != 1:  # type: ignore[attr-defined]
        by = f" by {item.resolved_by}" if item.resolved_by else ""
        raise ReviewItemResolved(f"review item {item_id} was already resolved{by} at "
                                 f"{_moment(item.resolved_at)}")
    await record(session, actor=actor, action="review_item.resolved",
                 object=f"review_item:{item_id}",
                 before={"kind": item.kind, "subject": item.subject},
                 after={"resolution": note})
    return as_dict(item)
