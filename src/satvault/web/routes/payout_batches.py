"""Payout batches for operators (admin scope): resolving a ``stuck`` one. The work is
:mod:`satvault.reconcile.stuck`'s: the node (and, to give versions up, the signer) is asked
before the unit of work opens, which then changes the batch under the key's
``Idempotency-Key`` like every money POST."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.service import Principal
from satvault.backends.errors import BackendUnavailable
from satvault.kernel.errors import Forbidden
from satvault.reconcile import stuck
from satvault.reconcile.review import MAX_NOTE
from satvault.web.deps import IdempotencyKey, require_scope
from satvault.web.fields import STRICT_BODY
from satvault.web.idempotency import run_idempotent
from satvault.web.openapi import problem_responses
from satvault.web.state import runtime_of, sessions_of, settings_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin/payout-batches", tags=["admin"],
                   responses=problem_responses(403, 404, 409, 422, 503))
Admin = Annotated[Principal, Depends(require_scope("admin"))]
BatchId = Annotated[str, Path(max_length=40, description="A payout batch's id (pob_…).")]


class ResolveIn(BaseModel):
    model_config = STRICT_BODY
    action: Literal["requeue", "return", "paid_by"] = Field(
        description="requeue: its withdrawals are paid again later; return: they are "
                    "cancelled and their holds voided; paid_by: `txid` paid them all.")
    txid: str | None = Field(default=None, pattern="^[0-9a-f]{64}$",
                             description="With paid_by: the confirmed transaction that paid "
                                         "every withdrawal of the batch (some, with rest).")
    rest: Literal["requeue", "return"] | None = Field(
        default=None, description="With paid_by, when `txid` pays only some of the "
                                  "withdrawals: those are booked, the rest re-queued or "
                                  "returned (the same proofs as requeue and return).")
    note: str = Field(min_length=1, max_length=MAX_NOTE,
                      description="What was done and why (required; kept and audited).")


@router.post("/{batch_id}/resolve")
async def resolve_payout_batch(batch_id: BatchId, body: ResolveIn, request: Request,
                               admin: Admin, idempotency_key: IdempotencyKey) -> JSONResponse:
    """Resolve a ``stuck`` payout batch, only as far as the chain node proves it safe:
    `409 cannot-resolve-batch` (nothing changed) otherwise, or when it is not stuck (any
    more: of two resolutions at once, one happens). Its open ``payout_stuck`` review items
    are resolved with the note; one audit row (``payout_batch.resolved``)."""
    if admin.owner_type != "user":
        raise Forbidden("a payout batch is resolved with an admin user's own API key")
    actor = f"user:{admin.owner_id}"
    runtime = runtime_of(request)

    async def prepare() -> stuck.Proof:
        if runtime is None:
            raise BackendUnavailable("this process has no chain backend or signer")
        return await stuck.prepare(sessions_of(request), backend=runtime.backend,
                                   signer=runtime.signer, settings=settings_of(request),
                                   batch_id=batch_id, action=body.action, note=body.note,
                                   actor=actor, txid=body.txid, rest=body.rest)

    async def work(session: AsyncSession, proof: stuck.Proof) -> tuple[int, Any]:
        return 200, await stuck.resolve(session, proof, actor=actor, note=body.note)

    return await run_idempotent(request, owner=actor, key=idempotency_key, work=work,
                                prepare=prepare)
