"""Who may see or manage a store: a store key its own store, a merchant key every store of
its merchant, an admin key every store. Anyone else gets the same 404 as for a store that does
not exist, so store ids cannot be probed. Likewise for wallets: the owner's key, or a key of
the merchant that owns it.

Seeing is not spending. Money leaves a wallet (a withdrawal on any rail, an internal payment,
a refund, a voucher) and its allow-list grows only at the hand of its holders: its owner's
keys and tokens and, for a merchant's wallet, the merchant's (:func:`holds_wallet`). An
admin's key sees every wallet, freezes it, decides its cases, but is refused (403
``not-wallet-holder``) when it asks to move a customer's money: found from outside, one admin
paid themselves from a customer's wallet internally (which no withdrawal policy can hold for
approvers) and allow-listed their own node on a customer's wallet to pass a two-approver
policy alone."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Store, Wallet
from satvault.accounts.service import Principal, get_wallet
from satvault.kernel.errors import NotFound, NotHolder

__all__ = ["held_wallet", "holds_wallet", "owned_store", "owns_store", "require_holder",
           "sees_wallet", "visible_wallet"]


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
    """Whether this caller may see ``wallet`` (for callers that read it themselves): its
    holders, and admins."""
    return principal.is_admin or holds_wallet(principal, wallet)


async def visible_wallet(session: AsyncSession, principal: Principal, wallet_id: str) -> Wallet:
    """The wallet if this caller may see it; otherwise the same 404 as a missing one."""
    try:
        wallet = await get_wallet(session, wallet_id)
    except NotFound:
        wallet = None
    if wallet is None or not sees_wallet(principal, wallet):
        raise NotFound(f"wallet {wallet_id!r} not found")
    return wallet


def holds_wallet(principal: Principal, wallet: Wallet) -> bool:
    """Whether this caller may move ``wallet``'s money out: its owner's keys and tokens, and
    for a merchant's wallet the keys of that merchant and of its stores and the tokens acting
    for it. ``admin`` does not count: it sees, it does not spend."""
    if (principal.owner_type, principal.owner_id) == (wallet.owner_type, wallet.owner_id):
        return True
    return wallet.owner_type == "merchant" and principal.merchant_id == wallet.owner_id


def require_holder(principal: Principal, wallet: Wallet) -> None:
    """Refuse (403) a caller who sees ``wallet`` but does not hold it."""
    if not holds_wallet(principal, wallet):
        raise NotHolder(
            f"wallet {wallet.id!r} is not this caller's: an admin's rights show every wallet "
            "but move no customer's money (withdrawals, payments, refunds, vouchers and "
            "allow-list entries are made by the wallet's holder)")


async def held_wallet(session: AsyncSession, principal: Principal, wallet_id: str) -> Wallet:
    """The wallet if this caller may move its money: 404 as :func:`visible_wallet` for one it
    may not see, 403 for one it sees and does not hold."""
    wallet = await visible_wallet(session, principal, wallet_id)
    require_holder(principal, wallet)
    return wallet
