"""Who may see or manage a store: a store key its own store, a merchant key every store of
its merchant, an admin key every store. Anyone else gets the same 404 as for a store that does
not exist, so store ids cannot be probed. Likewise for wallets: the owner's key, or a key of
the merchant that owns it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Store, Wallet
from satvault.accounts.service import Principal, get_wallet
from satvault.kernel.errors import NotFound

__all__ = ["owned_store", "owns_store", "sees_wallet", "visible_wallet"]


def owns_store(principal: Principal, store: Store) -> bool:
    if principal.is_admin:
        return True
    if principal.owner_type == "store":
        return principal.owner_id == store.id
    if principal.owner_type == "merchant":
        return principal.owner_id == store.merchant_id
    return False


async def owned_store(session: AsyncSession, principal: Principal, store_id: str, *,
                      for_update: bool = False) -> Store:
    """The store if this caller may see it; otherwise the same 404 as a missing one."""
    store = await session.get(Store, store_id, with_for_update=for_update or None)
    if store is None or not owns_store(principal, store):
        raise NotFound(f"store {store_id!r} not found")
    return store


def sees_wallet(principal: Principal, wallet: Wallet) -> bool:
    """Whether this caller may see ``wallet`` (for callers that read it themselves)."""
    if principal.owns(wallet.owner_type, wallet.owner_id):
        return True
    return wallet.owner_type == "merchant" and principal.merchant_id == wallet.owner_id


async def visible_wallet(session: AsyncSession, principal: Principal, wallet_id: str) -> Wallet:
    """The wallet if this caller may see it; otherwise the same 404 as a missing one."""
    try:
        wallet = await get_wallet(session, wallet_id)
    except NotFound:
        wallet = None
    if wallet is None or not sees_wallet(principal, wallet):
        raise NotFound(f"wallet {wallet_id!r} not found")
    return wallet
