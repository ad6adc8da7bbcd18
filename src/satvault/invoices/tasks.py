"""Background work for invoices: keep every live invoice's status in step with its payments."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.lightning import LightningBackend
from satvault.config import Settings
from satvault.db import utcnow
from satvault.invoices.models import StoreInvoice
from satvault.invoices.service import refresh
from satvault.ledger.store import retrying

__all__ = ["refresh_open_invoices"]


async def _one(session: AsyncSession, *, invoice_id: str, settings: Settings,
               lightning: LightningBackend | None) -> bool:
    inv = await session.get(StoreInvoice, invoice_id, with_for_update=True)
    if inv is None:
        return False
    return await refresh(session, inv, settings=settings, lightning=lightning)


async def refresh_open_invoices(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                                lightning: LightningBackend | None) -> int:
    """Refresh live invoices and those still inside the monitoring window (a late payment can
    arrive after expiry). Returns how many changed."""
    since = utcnow() - timedelta(minutes=settings.invoice_monitoring_minutes)
    async with sessions() as s:
        ids = (await s.execute(select(StoreInvoice.id).where(
            StoreInvoice.additional_status != "marked",
            StoreInvoice.status.in_(("new", "processing"))
            | ((StoreInvoice.status == "expired") & (StoreInvoice.expires_at > since))
            # a reorg can take a settled invoice's payment away again
            | ((StoreInvoice.status == "settled") & (StoreInvoice.settled_at > since))
        ))).scalars().all()
    changed = 0
    for invoice_id in ids:
        changed += int(await retrying(sessions, partial(
            _one, invoice_id=invoice_id, settings=settings, lightning=lightning)))
    return changed
