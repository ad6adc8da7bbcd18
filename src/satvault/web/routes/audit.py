"""Operator endpoints (admin scope) of the hash-chained audit log: its rows with their hashes,
and a full verification."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from satvault.accounts.service import Principal
from satvault.audit.service import list_events, seal_all, verify
from satvault.web.deps import SessionDep, require_scope

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin/audit", tags=["admin"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]


@router.get("")
async def audit_rows(
    session: SessionDep, _admin: Admin,
    after: Annotated[int, Query(ge=0, le=2**63 - 1,
                                description="Rows with an id above this one.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Audit rows in id order (actor, action, object, before/after, time, seq, prev_hash,
    hash; rows not sealed yet have no seq or hash). Page with ``after`` = the last id seen."""
    rows = await list_events(session, after=after, limit=limit)
    return {"rows": rows, "next_after": rows[-1]["id"] if rows else after}


@router.get("/verify")
async def audit_verify(request: Request, _admin: Admin) -> dict[str, Any]:
    """Seal what is pending, then walk the whole chain (and the ledger transfer ranges it
    vouches for): ``ok``, the head, and the first broken row if there is one. Its own
    transactions, no request transaction held open meanwhile (the sealer waits for those)."""
    sessions = request.app.state.sessions
    await seal_all(sessions, fence_timeout=5.0)
    async with sessions() as s, s.begin():
        result = await verify(s)
    return result.as_dict()
