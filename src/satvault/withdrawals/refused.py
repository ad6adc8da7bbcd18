"""An internal payment refused after the payee's invoice left the node.

Paying one of our own invoices takes it off the node first (no transaction open; every
refusal that needs no lock is checked before, the withdrawal policy's rules on the payment
alone included), then the unit of work settles it. The risk rules and the policy's window
rules decide under the payer's lock, inside that unit of work, and the 24-hour and tier
limits are checked again there: a payment they refuse rolls back, and the payee's invoice is
dead on the node while its row still says ``open``.

:func:`cancel_refused` puts the row in step with the node, after the rollback and in a short
transaction of its own (refusals are rare: nothing of this is on the success path): the
invoice becomes ``canceled`` (only if it is still ``open``: one paid meanwhile stays paid, one
another payment held for review reserved stays ``reserved``), and a store invoice still
awaiting payment gets a fresh BOLT11 for what is due through the invoices' own follow-up
(:func:`satvault.invoices.tasks.lightning_follow_up`, passed in by the composition root), so
its checkout page stays payable. A wallet's invoice is simply ``canceled``: the payee asks for
a new one, as after an expiry. In the same transaction the refusal is counted against the
paying wallet's person (``internal_refusals``, with the person the payer had then): a person
with ``internal_refusals_per_day`` of them in 24 hours is refused, from any of their
wallets, before another invoice is taken off the node
(:func:`~satvault.lightning.payments.take_off_node`), so nobody can cancel other people's
invoices at will; refusals that cancelled nothing are not counted, nor the loss of an invoice
our LNURL-pay service issued for this very payer's request (a Lightning Address's): nobody
else waited on it.

An invoice a payment held for review took off the node is ``reserved`` for it (the withdrawal
in ``review``, its BOLT11 kept in ``risk_held_invoices``): nobody else may pay it, and the
case settles it inside the ledger when it releases the payment
(:func:`~satvault.lightning.payments.settle_held_internally`). When the case returns the money
instead, the invoice is cancelled in the case's transaction (:func:`cancel_returned`), counted
against the payer like a refusal, and the edge runs the store invoice's follow-up after the
commit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import ColumnElement, insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.persons import person_of
from satvault.db import utcnow
from satvault.kernel.retrying import retrying
from satvault.lightning.models import (
    ISSUED_ON_REQUEST,
    InternalRefusal,
    LnInvoice,
    LnInvoiceStatus,
)
from satvault.logs import get_logger
from satvault.payouts.models import Withdrawal, WithdrawalMethod

__all__ = ["InvoiceFollowUp", "cancel_refused", "cancel_returned", "cancels_on_refusal"]

log = get_logger(__name__)

# What the composition root passes to bring a store invoice's BOLT11s in step after one of
# them was cancelled (the node's half: a fresh BOLT11 for what is due): its id.
InvoiceFollowUp = Callable[[str], Awaitable[None]]


async def _cancel(session: AsyncSession, where: ColumnElement[bool], *,
                  status: LnInvoiceStatus, payer: str) -> tuple[str | None, str] | None:
    """Mark the invoice ``where`` names ``canceled`` if it is in ``status``, and count that
    against the paying wallet ``payer``: its store invoice's id and its payment hash, or
    None if it was not cancelled."""
    row = (await session.execute(
        update(LnInvoice).where(where, LnInvoice.status == status)
        .values(status=LnInvoiceStatus.CANCELED)
        .returning(LnInvoice.store_invoice_id, LnInvoice.payment_hash, LnInvoice.purpose)
        .execution_options(synchronize_session=False))).first()
    if row is None:
        return None
    if row[2] != ISSUED_ON_REQUEST:  # one issued for this payer's request cost nobody else
        await session.execute(insert(InternalRefusal).values(
            wallet_id=payer, person=person_of(payer), payment_hash=row[1], at=utcnow()))
    return row[0], row[1]


async def cancel_refused(sessions: async_sessionmaker[AsyncSession], payment_hash: str, *,
                         payer: str, follow_up: InvoiceFollowUp | None = None) -> bool:
    """After the unit of work of an internal payment from the wallet ``payer`` that took the
    invoice ``payment_hash`` off the node raised (and rolled back): the invoice is
    ``canceled`` unless it was paid or reserved meanwhile, the refusal counted against
    ``payer``, and a store invoice's follow-up runs after the commit. True if it was
    cancelled. Never raises: the caller answers with the refusal."""
    try:
        done = await retrying(sessions, lambda s: _cancel(
            s, LnInvoice.payment_hash == payment_hash, status=LnInvoiceStatus.OPEN,
            payer=payer))
    except Exception:
        log.exception("ln_invoice_cancel_after_refusal_failed", payment_hash=payment_hash)
        return False
    if done is None:
        return False
    store_invoice_id = done[0]
    log.info("ln_invoice_cancelled_after_refusal", payment_hash=payment_hash,
             store_invoice=store_invoice_id, payer=payer)
    if store_invoice_id is not None and follow_up is not None:
        try:
            await follow_up(store_invoice_id)
        except Exception:  # the store invoice's on-chain address still takes the payment
            log.exception("store_invoice_follow_up_failed", invoice=store_invoice_id)
    return True


@contextlib.asynccontextmanager
async def cancels_on_refusal(sessions: async_sessionmaker[AsyncSession],
                             taken: Callable[[], tuple[str, str] | None], *,
                             follow_up: InvoiceFollowUp | None = None
                             ) -> AsyncIterator[None]:
    """Around a payment's remote preparation and unit of work: if it raises once
    ``taken()`` names the payment hash of an invoice of ours it took off the node and the
    paying wallet, :func:`cancel_refused` runs before the error goes on."""
    try:
        yield
    except Exception:
        took = taken()
        if took is not None:
            await cancel_refused(sessions, took[0], payer=took[1], follow_up=follow_up)
        raise


async def cancel_returned(session: AsyncSession, wd: Withdrawal, *, bolt11: str
                          ) -> str | None:
    """A held internal payment whose money a case returns, in the case's transaction: the
    invoice it reserved (off the node since) is ``canceled`` and that counted against its
    wallet; the id of its store invoice, if any, for the follow-up after the commit."""
    if wd.method != WithdrawalMethod.INTERNAL:
        return None
    done = await _cancel(session, LnInvoice.bolt11 == bolt11.lower(),
                         status=LnInvoiceStatus.RESERVED, payer=wd.wallet_id)
    return done[0] if done is not None else None
