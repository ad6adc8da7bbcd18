"""Operator endpoints (admin scope) of the hash-chained audit log: its rows with their hashes,
a full verification, and anchors of its head on chain (requested here, carried by the next
sweep; ``satvault audit verify-anchor <txid>`` checks one against the chain)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from satvault.accounts.service import Principal
from satvault.audit.anchors import list_anchors
from satvault.audit.service import anchor, list_events, seal_all, settled_id, verify
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
    hash; rows not sealed yet have no seq or hash). Page with ``after`` = ``next_after``.
    Only rows no transaction still open can precede are listed (:func:`settled_id`), so a
    row that commits late with a lower id is never paged past."""
    rows = await list_events(session, after=after, limit=limit,
                             upto=await settled_id(session))
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


@router.get("/anchors")
async def audit_anchors(
    session: SessionDep, _admin: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The on-chain anchors, newest first: ``requested`` (waiting for a sweep), ``planned``
    (in a sweep, ``batch_id``), ``confirmed`` (``txid``, ``block_height``), ``superseded``."""
    return {"anchors": await list_anchors(session, limit=limit)}


@router.post("/anchors", status_code=202)
async def audit_anchor_onchain(request: Request, admin: Admin) -> dict[str, Any]:
    """Seal, record the head as an ``audit.anchor`` row and ask for it to be committed in the
    next sweep's ``OP_RETURN`` (it replaces a request no sweep carried yet). 422 when nothing
    is sealed yet. Its own transactions, like ``/verify``."""
    top = await anchor(request.app.state.sessions, actor=admin.owner_id,
                       fence_timeout=5.0, onchain=True)
    return {"requested": True, **top.as_dict()}
