"""Who may see or manage a store: a store key its own store, a merchant key every store of
its merchant, an admin key every store. Anyone else gets the same 404 as for a store that does
not exist, so store ids cannot be probed."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Store
from satvault.accounts.service import Principal
from satvault.kernel.errors import NotFound

__all__ = ["owned_store", "owns_store"]


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
