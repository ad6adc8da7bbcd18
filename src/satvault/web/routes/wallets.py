"""Account and wallet endpoints: who am I, wallet balances, wallet statements."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.access import visible_wallet
from satvault.accounts.models import Wallet
from satvault.accounts.schemas import MeOut, StatementLineOut, StatementOut, WalletOut
from satvault.accounts.service import Principal
from satvault.accounts.views import wallet_balances
from satvault.config import Settings
from satvault.ledger.history import statement
from satvault.ledger.store import get_account
from satvault.payouts.service import limits_left
from satvault.web.deps import CurrentPrincipal, SessionDep, require_scope
from satvault.web.state import settings_of

__all__ = ["balances_of", "router"]

router = APIRouter(prefix="/api/v1", tags=["wallets"])
WalletReader = Annotated[Principal, Depends(require_scope("wallet:read"))]


@router.get("/me", response_model=MeOut)
async def me(session: SessionDep, principal: CurrentPrincipal) -> MeOut:
    owners = [(principal.owner_type, principal.owner_id)]
    if principal.merchant_id:
        owners.append(("merchant", principal.merchant_id))
    rows = (await session.execute(select(Wallet.id).where(or_(*(
        (Wallet.owner_type == t) & (Wallet.owner_id == i) for t, i in owners
    ))))).scalars().all()
    return MeOut(key_id=principal.key_id, owner_type=principal.owner_type,
                 owner_id=principal.owner_id, scopes=sorted(principal.scopes),
                 wallets=list(rows))


@router.get("/wallets/{wallet_id}", response_model=WalletOut)
async def wallet_balance(wallet_id: str, session: SessionDep, principal: WalletReader,
                         request: Request) -> WalletOut:
    wallet = await visible_wallet(session, principal, wallet_id)
    return await balances_of(session, wallet, settings_of(request))


async def balances_of(session: AsyncSession, wallet: Wallet, settings: Settings) -> WalletOut:
    """A wallet's balances as the API shows them (the merchant dashboard shows the same)."""
    account = await get_account(session, wallet.ledger_account_id)
    frozen = 0
    if wallet.frozen_ledger_account_id is not None:  # deposits the risk rules held back
        b = (await get_account(session, wallet.frozen_ledger_account_id)).balances
        frozen = int(b.credits_posted - b.debits_posted)
    kyc = await limits_left(session, wallet=wallet, settings=settings)
    return WalletOut(**wallet_balances(wallet, account.balances), frozen_msat=frozen, **kyc)


@router.get("/wallets/{wallet_id}/transactions", response_model=StatementOut)
async def wallet_transactions(
    wallet_id: str, session: SessionDep, principal: WalletReader,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> StatementOut:
    wallet = await visible_wallet(session, principal, wallet_id)
    page = await statement(session, wallet.ledger_account_id, limit=limit, cursor=cursor)
    return StatementOut(
        wallet_id=wallet.id,
        next_cursor=page.next_cursor,
        items=[StatementLineOut(
            seq=ln.seq, transfer_id=ln.transfer_id, kind=ln.kind.value, direction=ln.direction,
            amount_msat=ln.amount, code=ln.code, ref=ln.ref,
            hold_state=ln.hold_state.value if ln.hold_state else None,
            created_at=ln.created_at, balance_msat=ln.posted_after,
            available_msat=ln.available_after,
        ) for ln in page.lines],
    )
