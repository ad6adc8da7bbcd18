"""Custody moves for operators (admin scope): resolving a ``stuck`` sweep or refill. The work
is :mod:`satvault.reconcile.stuck_moves`'s: the node is asked before the unit of work opens,
which then changes the move under the key's ``Idempotency-Key`` like every money POST."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.service import Principal
from satvault.backends.errors import BackendUnavailable
from satvault.kernel.errors import Forbidden
from satvault.reconcile import stuck_moves
from satvault.reconcile.review import MAX_NOTE
from satvault.web.deps import IdempotencyKey, require_scope
from satvault.web.fields import STRICT_BODY
from satvault.web.idempotency import run_idempotent
from satvault.web.openapi import problem_responses
from satvault.web.state import runtime_of, sessions_of, settings_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin/custody-moves", tags=["admin"],
                   responses=problem_responses(403, 404, 409, 422, 503))
Admin = Annotated[Principal, Depends(require_scope("admin"))]
MoveId = Annotated[str, Path(max_length=40, description="A sweep's or refill's id (swp_…, "
                                                        "rfl_…).")]


class MoveResolveIn(BaseModel):
    model_config = STRICT_BODY
    action: Literal["abandon", "confirmed_by"] = Field(
        description="abandon: the move is given up, its coins free for a later one; "
                    "confirmed_by: `txid` did the move, booked as the move.")
    txid: str | None = Field(default=None, pattern="^[0-9a-f]{64}$",
                             description="With confirmed_by: the confirmed transaction that "
                                         "did the move.")
    note: str = Field(min_length=1, max_length=MAX_NOTE,
                      description="What was done and why (required; kept and audited).")


@router.post("/{move_id}/resolve")
async def resolve_custody_move(move_id: MoveId, body: MoveResolveIn, request: Request,
                               admin: Admin, idempotency_key: IdempotencyKey) -> JSONResponse:
    """Resolve a ``stuck`` sweep or refill, only as far as the chain node proves it safe:
    `409 cannot-resolve-batch` (nothing changed) otherwise, or when it is not stuck (any
    more: of two resolutions at once, one happens). Its open ``payout_stuck`` review items
    are resolved with the note; one audit row (``custody_move.resolved``)."""
    if admin.owner_type != "user":
        raise Forbidden("a custody move is resolved with an admin user's own API key")
    actor = f"user:{admin.owner_id}"
    runtime = runtime_of(request)

    async def prepare() -> stuck_moves.MoveProof:
        if runtime is None:
            raise BackendUnavailable("this process has no chain backend")
        return await stuck_moves.prepare(sessions_of(request), backend=runtime.backend,
                                         settings=settings_of(request), batch_id=move_id,
                                         action=body.action, note=body.note, txid=body.txid)

    async def work(session: AsyncSession, proof: stuck_moves.MoveProof) -> tuple[int, Any]:
        return 200, await stuck_moves.resolve(session, proof, actor=actor, note=body.note)

    return await run_idempotent(request, owner=actor, key=idempotency_key, work=work,
                                prepare=prepare)
