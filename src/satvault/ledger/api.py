"""Operator endpoints for the ledger (admin scope): the consistency check and raw accounts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from satvault.accounts.service import Principal
from satvault.ledger.check import check_ledger
from satvault.ledger.store import get_account
from satvault.web.deps import SessionDep, require_scope

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin/ledger", tags=["admin"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]


@router.get("/check")
async def ledger_check(session: SessionDep, _admin: Admin) -> dict[str, Any]:
    return (await check_ledger(session)).as_dict()


@router.get("/accounts/{account_id}")
async def ledger_account(
    account_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="A ledger account id.")],
    session: SessionDep, _admin: Admin,
) -> dict[str, Any]:
    a = await get_account(session, account_id)
    return {"id": a.id, "asset": a.asset, "kind": a.kind.value,
            "debits_must_not_exceed_credits": a.debits_must_not_exceed_credits,
            "credits_must_not_exceed_debits": a.credits_must_not_exceed_debits,
            **dict(zip(("debits_posted", "credits_posted", "debits_pending", "credits_pending"),
                       a.balances.as_tuple(), strict=True))}
