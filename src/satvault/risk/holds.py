"""A payment the rules sent to review: held, not paid.

The withdrawal is written in status ``review`` with its ledger hold, as a pending one would
be, and nothing else: no Lightning payment row (the payer reads those) and no batch (the
payout job picks only ``pending``). An on-chain one goes through
:func:`satvault.payouts.service.request_withdrawal` (every check, status ``review``); a
Lightning or internal one is checked here as the Lightning path would (the invoice, the
per-payment maximum, the 24-hour limit), and the BOLT11 it would pay is kept
(``risk_held_invoices``: the destination may be an LNURL or address, resolved once). An
internal one's invoice, off the node already, is ``reserved`` for it
(:func:`~satvault.lightning.payments.reserve_own_invoice`): nobody else may pay it meanwhile.
Releasing or returning the money is the case's decision (:mod:`satvault.risk.cases`), and
nothing else's.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.ids import new_id
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import transfer
from satvault.lightning.bolt11check import check_invoice
from satvault.lightning.errors import InvoiceUnderReview
from satvault.lightning.payments import (
    check_payment_size,
    check_time_to_pay,
    fee_reserve,
    not_paid_here_and_ours,
    refuse_ours_not_taken,
    reserve_own_invoice,
)
from satvault.payouts.events import emit_withdrawal
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.payouts.service import check_daily_limit
from satvault.risk.models import RiskHeldInvoice

__all__ = ["hold_ln_for_review", "refuse_while_held"]


async def refuse_while_held(session: AsyncSession, payment_hash: str) -> None:
    """Refuse to pay an invoice while a payment of it waits for review, from any wallet
    (found from outside: a second request for the same external invoice, screened afresh and
    approved, was paid at once, so the review was bypassed and the held one could only be
    returned). By payment hash: the same invoice signed again is the same payment."""
    held = (await session.execute(
        select(RiskHeldInvoice.withdrawal_id)
        .join(Withdrawal, Withdrawal.id == RiskHeldInvoice.withdrawal_id)
        .where(RiskHeldInvoice.payment_hash == payment_hash,
               Withdrawal.status == WithdrawalStatus.REVIEW).limit(1))).first()
    if held is not None:
        raise InvoiceUnderReview


async def hold_ln_for_review(session: AsyncSession, *, wallet: Wallet, bolt11: str,
                             amount_msat: int | None, destination: str, internal: bool,
                             settings: Settings, store_id: str | None = None,
                             invoice_id: str | None = None) -> Withdrawal:
    inv = check_invoice(bolt11, network=settings.network, amount_msat=amount_msat)
    check_payment_size(inv.amount_msat, settings)
    if not internal:  # for the node to pay once released (checked again then)
        check_time_to_pay(inv, settings)
        # Refused, not held, when it is already paid or being paid from here (found from
        # outside: a second payment of one external invoice held for review kept its money
        # held until an admin closed a case whose release could only be refused).
        if await not_paid_here_and_ours(session, inv.payment_hash):
            # One of ours not taken off the node (the payer's own, found from outside: held
            # for review with a fee reserve, where an approved one is refused).
            await refuse_ours_not_taken(session, wallet=wallet, payment_hash=inv.payment_hash,
                                        amount_msat=inv.amount_msat)
    await check_daily_limit(session, wallet=wallet, amount_msat=inv.amount_msat,
                            settings=settings, rail="internal" if internal else "lightning")
    if internal:  # off the node already: kept for this payment until its case decides
        await reserve_own_invoice(session, wallet=wallet, payment_hash=inv.payment_hash,
                                  amount_msat=inv.amount_msat)
    reserve = 0 if internal else fee_reserve(inv.amount_msat, settings)
    now = utcnow()
    wid = new_id("wd")
    wd = Withdrawal(id=wid, wallet_id=wallet.id,
                    method=WithdrawalMethod.INTERNAL if internal else WithdrawalMethod.LIGHTNING,
                    destination=destination, script_pubkey=None, amount_msat=inv.amount_msat,
                    fee_reserve_msat=reserve, fee_msat=None, status=WithdrawalStatus.REVIEW,
                    batch_id=None, txid=None, hold_id=f"wd:{wid}:hold", created_at=now,
                    updated_at=now, store_id=store_id, invoice_id=invoice_id)
    session.add(wd)
    await session.flush()
    session.add(RiskHeldInvoice(withdrawal_id=wid, bolt11=inv.bolt11,
                                payment_hash=inv.payment_hash))
    platform = await ensure_platform_accounts(session, "BTC")
    await transfer(session, TransferSpec(
        wd.hold_id, wallet.ledger_account_id, platform.clearing.id, inv.amount_msat + reserve,
        "BTC", kind=TransferKind.PENDING, code="ln_withdrawal", ref=wid))
    await emit_withdrawal(session, wd, "created")
    return wd
