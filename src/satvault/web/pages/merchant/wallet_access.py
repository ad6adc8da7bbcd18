"""The merchant dashboard's money pages act on the merchant's wallet, as the merchant's API
principal, only for a merchant the signed-in user owns (another merchant's id: 404)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.access import visible_wallet
from satvault.accounts.models import Merchant, Wallet
from satvault.accounts.service import Principal, ensure_wallet
from satvault.auth.sessions import SessionView
from satvault.web.pages.deps import merchant_principal

__all__ = ["merchant_wallet"]


async def merchant_wallet(session: AsyncSession, view: SessionView, merchant_id: str
                          ) -> tuple[Principal, Merchant, Wallet]:
    principal = await merchant_principal(session, view, merchant_id)
    merchant = await session.get(Merchant, merchant_id)
    assert merchant is not None  # merchant_principal found it
    wallet = await ensure_wallet(session, owner_type="merchant", owner_id=merchant_id)
    return principal, merchant, await visible_wallet(session, principal, wallet.id)
