"""Who may see a store invoice: whoever may see its store (:mod:`satvault.accounts.access`).
Anyone else gets the same 404 as for an invoice that does not exist."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.access import owned_store
from satvault.accounts.service import Principal
from satvault.invoices.models import StoreInvoice
from satvault.invoices.service import get_invoice
from satvault.kernel.errors import NotFound

__all__ = ["visible_invoice"]


async def visible_invoice(session: AsyncSession, principal: Principal, invoice_id: str
                          ) -> StoreInvoice:
    try:
        inv = await get_invoice(session, invoice_id)
        await owned_store(session, principal, inv.store_id)
    except NotFound:
        raise NotFound(f"invoice {invoice_id!r} not found") from None
    return inv
