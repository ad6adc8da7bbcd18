"""Withdrawal endpoints. Creating one requires an ``Idempotency-Key``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.api import visible_wallet
from satvault.accounts.errors import NotFound
from satvault.accounts.service import Principal
from satvault.payouts.models import Withdrawal
from satvault.payouts.schemas import WithdrawalIn, WithdrawalOut
from satvault.payouts.service import request_withdrawal
from satvault.web.deps import SessionDep, require_scope
from satvault.web.idempotency import run_idempotent

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["withdrawals"])
Withdrawer = Annotated[Principal, Depends(require_scope("withdrawals:write"))]
Reader = Annotated[Principal, Depends(require_scope("wallet:read"))]


def out(w: Withdrawal) -> WithdrawalOut:
    return WithdrawalOut(id=w.id, wallet_id=w.wallet_id, method=w.method, status=w.status,
                         destination=w.destination, amount_msat=w.amount_msat,
                         fee_reserve_msat=w.fee_reserve_msat, fee_msat=w.fee_msat, txid=w.txid,
                         created_at=w.created_at, updated_at=w.updated_at)


@router.post("/wallets/{wallet_id}/withdrawals", response_model=WithdrawalOut,
             status_code=201)
async def create_withdrawal(
    wallet_id: str, body: WithdrawalIn, request: Request, principal: Withdrawer,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    settings = request.app.state.settings

    async def work(session: AsyncSession) -> tuple[int, Any]:
        wallet = await visible_wallet(session, principal, wallet_id)
        wd = await request_withdrawal(session, wallet=wallet, destination=body.destination,
                                      amount_msat=body.amount_msat, settings=settings)
        return 201, out(wd).model_dump(mode="json")

    owner = f"{principal.owner_type}:{principal.owner_id}"
    return await run_idempotent(request, owner=owner, key=idempotency_key, work=work)


@router.get("/withdrawals/{withdrawal_id}", response_model=WithdrawalOut)
async def get_withdrawal(withdrawal_id: str, session: SessionDep, principal: Reader
                         ) -> WithdrawalOut:
    wd = await session.get(Withdrawal, withdrawal_id)
    if wd is None:
        raise NotFound(f"withdrawal {withdrawal_id!r} not found")
    await visible_wallet(session, principal, wd.wallet_id)
    return out(wd)
