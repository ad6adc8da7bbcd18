"""Each payment an invoice received, for the merchant's invoice page: on-chain outputs to its
address (txid, confirmations against what they need, what the ledger did) and the Lightning
invoices paid for it (payment hash). A read; it changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.invoices.models import StoreInvoice
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from satvault.onchain.models import ChainBlock, OnchainPayment

__all__ = ["InvoicePayment", "invoice_payments"]


@dataclass(frozen=True, slots=True)
class InvoicePayment:
    rail: str  # "onchain" or "lightning"
    reference: str  # txid:vout, or the payment hash
    txid: str | None
    payment_hash: str | None
    amount_msat: int
    confirmations: int | None  # on-chain only
    required_confirmations: int | None
    status: str  # on-chain: mempool/confirmed/conflicted; Lightning: paid
    credit_state: str  # on-chain: none/pending/credited/reversed/review; Lightning: credited
    at: datetime


async def invoice_payments(session: AsyncSession, inv: StoreInvoice) -> list[InvoicePayment]:
    """Oldest first. Confirmations count from the watcher's tip (0 while in the mempool)."""
    found: list[InvoicePayment] = []
    if inv.deposit_id:
        rows = (await session.execute(select(OnchainPayment).where(
            OnchainPayment.request_id == inv.deposit_id).order_by(OnchainPayment.id)
        )).scalars().all()
        tip = (await session.execute(select(func.max(ChainBlock.height)))
               ).scalar_one_or_none() if rows else None
        for p in rows:
            count = 0 if p.block_height is None or tip is None or p.block_height > tip \
                else tip - p.block_height + 1
            found.append(InvoicePayment(
                rail="onchain", reference=f"{p.txid}:{p.vout}", txid=p.txid, payment_hash=None,
                amount_msat=p.value_sat * 1000, confirmations=count,
                required_confirmations=max(p.required_confirmations, inv.speed_policy),
                status=p.status.value, credit_state=p.credit_state.value,
                at=p.first_seen_at))
    lns = (await session.execute(select(LnInvoice).where(
        LnInvoice.store_invoice_id == inv.id, LnInvoice.status == LnInvoiceStatus.PAID)
        .order_by(LnInvoice.paid_at, LnInvoice.id))).scalars().all()
    found += [InvoicePayment(
        rail="lightning", reference=ln.payment_hash, txid=None, payment_hash=ln.payment_hash,
        amount_msat=ln.paid_msat or 0, confirmations=None, required_confirmations=None,
        status="paid", credit_state="credited", at=ln.paid_at or ln.created_at) for ln in lns]
    found.sort(key=lambda p: p.at)
    return found
