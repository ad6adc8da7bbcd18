"""An internal payment refused after the payee's invoice left the node.

Paying one of our own invoices takes it off the node first (no transaction open; every
refusal that needs no lock is checked before), then the unit of work settles it. The risk
rules and the withdrawal policy decide under the payer's lock, inside that unit of work, and
the 24-hour and tier limits are checked again there: a payment they refuse rolls back, and
the payee's invoice is dead on the node while its row still says ``open``.

:func:`cancel_refused` puts the row in step with the node, after the rollback and in a short
transaction of its own (refusals are rare: nothing of this is on the success path): the
invoice becomes ``canceled`` (only if it is still ``open``: one paid meanwhile stays paid),
and a store invoice still awaiting payment gets a fresh BOLT11 for what is due through the
invoices' own follow-up (:func:`satvault.invoices.tasks.lightning_follow_up`, passed in by
the composition root), so its checkout page stays payable. A wallet's invoice is simply
``canceled``: the payee asks for a new one, as after an expiry.

An invoice a payment held for review reserved (the withdrawal in ``review``, its BOLT11 kept
in ``risk_held_invoices``) stays ``open``: the case settles it inside the ledger when it
releases the payment (:func:`~satvault.lightning.payments.settle_held_internally`). When the
case returns the money instead, the invoice is cancelled in the case's transaction
(:func:`cancel_returned`) and the edge runs the store invoice's follow-up after the commit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.kernel.retrying import retrying
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from satvault.logs import get_logger
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.risk.models import RiskHeldInvoice

__all__ = ["InvoiceFollowUp", "cancel_refused", "cancel_returned", "cancels_on_refusal"]

log = get_logger(__name__)

# What the composition root passes to bring a store invoice's BOLT11s in step after one of
# them was cancelled (the node's half: a fresh BOLT11 for what is due): its id.
InvoiceFollowUp = Callable[[str], Awaitable[None]]


def _held_for_review() -> ColumnElement[bool]:
    """A payment held for review reserved this invoice (correlated to ``ln_invoices``)."""
    return select(RiskHeldInvoice.withdrawal_id).join(
        Withdrawal, Withdrawal.id == RiskHeldInvoice.withdrawal_id).where(
        RiskHeldInvoice.bolt11 == LnInvoice.bolt11,
        Withdrawal.status == WithdrawalStatus.REVIEW,
        Withdrawal.method == WithdrawalMethod.INTERNAL).exists()


async def _cancel_open(session: AsyncSession, where: ColumnElement[bool]) -> list[str | None]:
    """Mark the open invoice(s) ``where`` names ``canceled``; their store invoices' ids."""
    rows = await session.execute(
        update(LnInvoice).where(where, LnInvoice.status == LnInvoiceStatus.OPEN)
        .values(status=LnInvoiceStatus.CANCELED)
        .returning(LnInvoice.store_invoice_id)
        .execution_options(synchronize_session=False))
    return list(rows.scalars())


async def cancel_refused(sessions: async_sessionmaker[AsyncSession], payment_hash: str, *,
                         follow_up: InvoiceFollowUp | None = None) -> bool:
    """After the unit of work of an internal payment that took the invoice ``payment_hash``
    off the node raised (and rolled back): the invoice is ``canceled`` unless it was paid
    meanwhile or a held payment reserved it, and a store invoice's follow-up runs after the
    commit. True if it was cancelled. Never raises: the caller answers with the refusal."""
    try:
        store_ids = await retrying(sessions, lambda s: _cancel_open(
            s, (LnInvoice.payment_hash == payment_hash) & ~_held_for_review()))
    except Exception:
        log.exception("ln_invoice_cancel_after_refusal_failed", payment_hash=payment_hash)
        return False
    if not store_ids:
        return False
    log.info("ln_invoice_cancelled_after_refusal", payment_hash=payment_hash,
             store_invoice=store_ids[0])
    if store_ids[0] is not None and follow_up is not None:
        try:
            await follow_up(store_ids[0])
        except Exception:  # the store invoice's on-chain address still takes the payment
            log.exception("store_invoice_follow_up_failed", invoice=store_ids[0])
    return True


@contextlib.asynccontextmanager
async def cancels_on_refusal(sessions: async_sessionmaker[AsyncSession],
                             taken: Callable[[], str | None], *,
                             follow_up: InvoiceFollowUp | None = None
                             ) -> AsyncIterator[None]:
    """Around a payment's remote preparation and unit of work: if it raises once
    ``taken()`` names the payment hash of an invoice of ours it took off the node,
    :func:`cancel_refused` runs before the error goes on."""
    try:
        yield
    except Exception:
        payment_hash = taken()
        if payment_hash is not None:
            await cancel_refused(sessions, payment_hash, follow_up=follow_up)
        raise



async def cancel_returned(session: AsyncSession, wd: Withdrawal, *, bolt11: str
                          ) -> str | None:
    """A held internal payment whose money a case returns, in the case's transaction: the
    invoice it reserved (off the node since) is ``canceled``; the id of its store invoice,
    if any, for the follow-up after the commit."""
    if wd.method != WithdrawalMethod.INTERNAL:
        return None
    store_ids = await _cancel_open(session, LnInvoice.bolt11 == bolt11.lower())
    return store_ids[0] if store_ids else None
