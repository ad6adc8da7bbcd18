"""Sending over Lightning: validate, hold amount + fee reserve, pay, and settle the hold only
on a definite answer.

Outcomes, and what they do to the ledger hold:

=============  ==============================================================================
SUCCEEDED      post amount + actual fee (the rest of the reserve is released), move it out of
               the Lightning account
FAILED         void — only for a definite failure the node reported and its record of the
               payment confirms (failed, or never started); retryable reasons (no route,
               timeout) are retried with backoff first, with the same payment hash. A
               withdraw voucher the payment redeemed opens again in the same transaction
               (:mod:`satvault.lightning.vouchers`)
IN_FLIGHT /    keep the hold; the reconciler asks the node (``track_payment``) until the answer
UNKNOWN        is definite. A timeout, a lost connection or a node restart is never a failure
=============  ==============================================================================

A payment of an invoice satvault itself issued settles inside the ledger (no routing, no fee):
the invoice is cancelled on the node *first*, so it can no longer be paid from outside, then
both wallets move in one transaction. Paying one's own invoice is refused. One that a payment
held for review took off the node is ``reserved`` for it (:func:`reserve_own_invoice`) until
its case decides: any other payment of it is refused before anything is touched
(:class:`~satvault.lightning.errors.InvoiceUnderReview`). A wallet whose person's payments
of our invoices (its own and those of the owner's other wallets, as the limits count them)
were refused ``internal_refusals_per_day`` times in 24 hours after taking the invoice off the
node (:mod:`satvault.withdrawals.refused` counts them) is refused before it takes another
one off (:class:`~satvault.lightning.errors.RefusedTooOften`).

Time left: an invoice the node is to pay must leave it ``ln_min_invoice_remaining_seconds``
(:func:`check_time_to_pay`), checked before anything is held wherever a payment for the node
is requested, held for review or released from it. An invoice that expired on the way would
fail at the node after the request was accepted (for a withdraw voucher: after it was spent).
One of our own invoices is settled in the transaction that checks it and needs only not be
expired.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import Wallet
from satvault.accounts.persons import person_of
from satvault.backends.errors import BackendError, BackendUnavailable
from satvault.backends.lightning import LightningBackend, PaymentResult, PaymentStatus
from satvault.backends.lnd import LndError
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.clock import unix_time
from satvault.kernel.errors import ConcurrentUpdate
from satvault.kernel.ids import new_id
from satvault.kernel.retrying import retrying
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.models import LedgerAccount
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import create_transfers, transfer
from satvault.lightning.bolt11check import CheckedInvoice, check_invoice, decode
from satvault.lightning.errors import (
    InvoiceExpiresSoon,
    InvoiceUnderReview,
    LightningError,
    PaymentRefused,
)
from satvault.lightning.invoices import (
    LIVE_PAYMENTS,
    StoreInvoiceHook,
    credit_settled,
    refuse_more_than_due,
)
from satvault.lightning.models import (
    ISSUED_ON_REQUEST,
    InternalRefusal,
    LnInvoice,
    LnInvoiceStatus,
    LnPayment,
    LnPaymentStatus,
)
from satvault.lightning.takes import Taken, claim_take, refuse, refused_too_often
from satvault.lightning.vouchers import reopen_after_failure
from satvault.logs import get_logger
from satvault.onchain.models import ReviewItem, ReviewKind
from satvault.payouts.events import emit_withdrawal, emit_withdrawal_events
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.payouts.service import (
    BoundInsert,
    check_daily_limit,
    free_to_leave,
    insert_within_daily_limit,
    within_limits,
)
from satvault.telemetry import PAYMENT_SECONDS, PAYMENTS

__all__ = ["REFUSALS_WINDOW", "LightningPayer", "OwnInvoice", "PayerReport", "cancel_on_node",
           "check_payment_size", "check_time_to_pay", "fee_reserve", "not_paid_here_and_ours",
           "own_bolt11", "pay_own_invoice", "payable_at_once", "refusals_since",
           "refuse_ours_not_taken", "release_held_payment", "request_ln_withdrawal",
           "reserve_own_invoice", "settle_held_internally", "take_off_node"]

log = get_logger(__name__)
RETRYABLE = {"FAILURE_REASON_NO_ROUTE", "FAILURE_REASON_TIMEOUT"}


def _receiver(bolt11: str) -> str:
    """The node a BOLT11 pays (its payee key); the text itself if it cannot be decoded."""
    try:
        return decode(bolt11).payee or bolt11
    except LightningError:  # stored invoices were checked; a surprise only loses the grouping
        return bolt11


def fee_reserve(amount_msat: int, settings: Settings) -> int:
    """max(ppm of the amount, rounded up; the configured minimum)."""
    return max(-(-amount_msat * settings.ln_fee_reserve_ppm // 1_000_000),
               settings.ln_fee_reserve_min_msat)


def check_time_to_pay(inv: CheckedInvoice, settings: Settings) -> None:
    """Refuse an invoice (checked, so not expired) that leaves the node less than
    ``ln_min_invoice_remaining_seconds`` to pay it."""
    floor = settings.ln_min_invoice_remaining_seconds
    left = inv.expires_at - unix_time()
    if left < floor:
        raise InvoiceExpiresSoon(
            f"this invoice expires in {max(int(left), 0)} s; a payment needs at least "
            f"{floor} s of an invoice's lifetime left: ask the payee for a new invoice")


def own_bolt11(destination: str) -> str:
    """The text a BOLT11 this platform issued is stored as, from what a client sends (no
    decoding: the ``lightning:`` prefix off, lower case, as the node wrote it)."""
    text = destination.strip()
    if text.lower().startswith("lightning:"):
        text = text[len("lightning:"):]
    return text.lower()


@dataclass(frozen=True, slots=True)
class OwnInvoice:
    """One of this platform's invoices, found by its BOLT11 text before any decoding, with
    what the payer can spend now."""

    payment_hash: str
    bolt11: str
    wallet_id: str
    status: LnInvoiceStatus
    amount_msat: int | None
    expires_at: datetime
    payer_free_msat: int
    payer_refusals: int = 0  # the payer's refusals in the window (:func:`refusals_since`)


_EXPIRY_MARGIN = timedelta(minutes=1)
# How far back a wallet's refused internal payments count (``internal_refusals_per_day``).
REFUSALS_WINDOW = timedelta(hours=24)


def refusals_since(wallet_id: Any, since: Any) -> ColumnElement[int]:
    """How many internal payments of ``wallet_id``'s person (a column or a value; the
    wallets that count together in the limits: a user's own and their merchants',
    :func:`~satvault.accounts.persons.person_of`) were refused after taking the payee's
    invoice off the node since ``since``: a scalar subquery, for a read made anyway (a probe
    for the person, one index range: ``ix_internal_refusals_person_at``)."""
    return select(func.count()).select_from(InternalRefusal).where(
        InternalRefusal.person == person_of(wallet_id),
        InternalRefusal.at >= since).scalar_subquery()


def payable_at_once(own: OwnInvoice, *, payer: Wallet, amount_msat: int | None,
                    settings: Settings) -> int | None:
    """The amount to pay if ``own`` can be paid internally without decoding it: open, not
    the payer's own, well within its expiry, the amount clear, within the per-payment limit
    and the payer's spendable balance, the payer not refused too often. None otherwise: the
    full path (decoding, the checks in order) then gives the outcome or the exact refusal."""
    if own.status != LnInvoiceStatus.OPEN or own.wallet_id == payer.id \
            or own.expires_at <= utcnow() + _EXPIRY_MARGIN or payer.frozen_at is not None \
            or own.payer_refusals >= settings.internal_refusals_per_day:
        return None
    if own.amount_msat is None:
        if amount_msat is None or amount_msat <= 0:
            return None
        pay = amount_msat
    elif amount_msat is not None and amount_msat != own.amount_msat:
        return None
    else:
        pay = own.amount_msat
    if pay > settings.ln_max_payment_msat or pay > own.payer_free_msat:
        return None
    return pay


async def cancel_on_node(backend: LightningBackend, payment_hash: str) -> None:
    """Take one of our invoices off the node (no transaction open): nobody outside can pay
    it any more. Harmless to repeat."""
    try:
        await backend.cancel_invoice(payment_hash)
    except BackendError as exc:
        raise PaymentRefused(f"could not take the invoice off the node ({exc}); "
                             "try again") from exc


# Refusals a caller can give before the node, with a session open and the amount to pay
# (the withdrawal policy's rules on the payment alone): raising refuses.
BeforeNode = Callable[[AsyncSession, int], Awaitable[None]]


async def take_off_node(sessions: async_sessionmaker[AsyncSession], *, wallet: Wallet,
                        bolt11: str, amount_msat: int | None, settings: Settings,
                        backend: LightningBackend | None, check_balance: bool = True,
                        before_node: BeforeNode | None = None, request: str = "") -> bool:
    """Before the unit of work opens: if ``bolt11`` is an open invoice this platform issued,
    cancel it on the node now, so nobody outside can pay it while it is settled inside the
    ledger. True if it was taken off (pass ``taken_off_node=True`` on). The node call is made
    with no transaction open; every refusal the unit of work can give without the payer's
    lock is checked first (own invoice, invoice not open, the amount, the per-payment limit,
    too little money, the wallet's and its tier's limits, and ``before_node``'s), so a payer
    who would be refused anyway does not kill someone's invoice. An invoice reserved for a
    payment under review, and a payer refused too often after taking invoices off, are
    refused here (raises), before anything is written or screened; so is a take the
    person's other payments in flight forbid (:func:`satvault.lightning.takes.claim_take`:
    ``request``, the caller's :func:`~satvault.lightning.takes.request_digest`)."""
    inv = check_invoice(bolt11, network=settings.network, amount_msat=amount_msat)
    if inv.amount_msat > settings.ln_max_payment_msat or wallet.frozen_at is not None:
        return False  # the unit of work refuses it with the right reason
    account = LedgerAccount
    free = select(account.credits_posted - account.debits_posted - account.debits_pending
                  ).where(account.id == wallet.ledger_account_id).scalar_subquery()
    async with sessions() as s:
        ours = (await s.execute(select(
            LnInvoice.wallet_id, LnInvoice.status, LnInvoice.amount_msat, free,
            refusals_since(wallet.id, utcnow() - REFUSALS_WINDOW), LnInvoice.purpose).where(
            LnInvoice.payment_hash == inv.payment_hash))).one_or_none()
        if ours is None or ours.wallet_id == wallet.id:
            return False  # not ours, or the unit of work refuses it with the right reason
        if ours.status == LnInvoiceStatus.RESERVED:
            raise InvoiceUnderReview
        if ours.status != LnInvoiceStatus.OPEN:
            return False
        if ours.amount_msat is not None and inv.amount_msat != ours.amount_msat:
            return False
        if check_balance and int(ours[3]) < inv.amount_msat:
            return False  # the ledger refuses it: leave the invoice payable from outside
        if not await within_limits(s, wallet=wallet, amount_msat=inv.amount_msat,
                                   settings=settings, rail=WithdrawalMethod.INTERNAL.value):
            return False
        if before_node is not None:
            await before_node(s, inv.amount_msat)
        counts = ours.purpose != ISSUED_ON_REQUEST  # that one nobody else waits on
        if int(ours[4]) >= settings.internal_refusals_per_day and counts:
            raise refused_too_often(int(ours[4]), settings)
    # The take recorded under the person's lock: the checks above again, counting the
    # person's other payments taking invoices off the node now (found from outside: a burst
    # passed them each alone), and the node asked only if it was taken.
    found, refusals = await claim_take(sessions, payment_hash=inv.payment_hash,
                                       wallet_id=wallet.id, amount_msat=inv.amount_msat,
                                       settings=settings, request=request,
                                       check_balance=check_balance, counts_refusals=counts)
    if found in (Taken.NOT_OPEN, Taken.NO_WALLET):
        return False  # the unit of work refuses it with the right reason
    refuse(found, refusals, payment_hash=inv.payment_hash, settings=settings)
    if backend is not None:
        await cancel_on_node(backend, inv.payment_hash)
    return True


def check_payment_size(amount_msat: int, settings: Settings) -> None:
    """Refuse (:class:`PaymentRefused`) an amount above the per-payment limit: no payment of
    ours may carry it, whatever else is true of it."""
    if amount_msat > settings.ln_max_payment_msat:
        raise PaymentRefused(f"{amount_msat} msat is above the per-payment limit of "
                             f"{settings.ln_max_payment_msat} msat")


async def request_ln_withdrawal(session: AsyncSession, *, wallet: Wallet, bolt11: str,
                                amount_msat: int | None, settings: Settings,
                                backend: LightningBackend | None,
                                original: str | None = None,
                                store_id: str | None = None, invoice_id: str | None = None,
                                taken_off_node: bool = False,
                                on_store_invoice: StoreInvoiceHook | None = None) -> Withdrawal:
    """Validate and either settle internally at once or hold and queue an external payment.
    No remote call is made here: an invoice of this platform is settled inside the ledger
    only once :func:`take_off_node` has cancelled it on the node (``taken_off_node``)."""
    inv = check_invoice(bolt11, network=settings.network, amount_msat=amount_msat)
    check_payment_size(inv.amount_msat, settings)
    if taken_off_node:  # one of ours, open and payable when it was taken off the node
        return await pay_own_invoice(session, wallet=wallet, payment_hash=inv.payment_hash,
                                     amount_msat=inv.amount_msat,
                                     destination=original or inv.bolt11, settings=settings,
                                     store_id=store_id, invoice_id=invoice_id,
                                     on_store_invoice=on_store_invoice)
    # One read: whether it is being paid from here, and whether it is one of ours (settled
    # internally: the internal rail's limits apply, not Lightning's).
    ours_exists = await not_paid_here_and_ours(session, inv.payment_hash)
    rail = WithdrawalMethod.INTERNAL if ours_exists else WithdrawalMethod.LIGHTNING
    await check_daily_limit(session, wallet=wallet, amount_msat=inv.amount_msat,
                            settings=settings, rail=rail.value)
    ours = (await session.execute(select(LnInvoice).where(
        LnInvoice.payment_hash == inv.payment_hash).with_for_update())).scalar_one_or_none()
    now = utcnow()
    wid = new_id("wd")
    if ours is not None:
        wd = await _settle_internally(session, wallet=wallet, invoice=ours,
                                      amount_msat=inv.amount_msat, wid=wid,
                                      destination=original or inv.bolt11,
                                      taken_off_node=taken_off_node or backend is None,
                                      fee_bp=settings.invoice_fee_bp, store_id=store_id,
                                      invoice_id=invoice_id,
                                      on_store_invoice=on_store_invoice)
        await emit_withdrawal_events(session, wd, ("created", "confirmed"))
        return wd
    check_time_to_pay(inv, settings)  # for the node to pay: before anything is held
    reserve = fee_reserve(inv.amount_msat, settings)
    wd = Withdrawal(id=wid, wallet_id=wallet.id, method=WithdrawalMethod.LIGHTNING,
                    destination=original or inv.bolt11, script_pubkey=None,
                    amount_msat=inv.amount_msat, fee_reserve_msat=reserve, fee_msat=None,
                    status=WithdrawalStatus.PENDING, batch_id=None, txid=None,
                    hold_id=f"wd:{wid}:hold", created_at=now, updated_at=now,
                    store_id=store_id, invoice_id=invoice_id)
    session.add(wd)
    await session.flush()
    platform = await ensure_platform_accounts(session, "BTC")
    await transfer(session, TransferSpec(
        wd.hold_id, wallet.ledger_account_id, platform.clearing.id, inv.amount_msat + reserve,
        "BTC", kind=TransferKind.PENDING, code="ln_withdrawal", ref=wid))
    await _queue_payment(session, wd, inv, now)
    await emit_withdrawal(session, wd, "created")
    return wd


async def _queue_payment(session: AsyncSession, wd: Withdrawal, inv: CheckedInvoice,
                         now: datetime) -> None:
    """The payment row the payer reads, for a withdrawal whose hold is placed. Its attempt
    follows the hash's earlier ones: an invoice whose payment failed may be paid again
    (found from outside: the new row's attempt 1 met the failed one's, and the customer
    was told the server was busy)."""
    earlier = (await session.execute(select(func.max(LnPayment.attempt)).where(
        LnPayment.payment_hash == inv.payment_hash))).scalar_one()
    session.add(LnPayment(
        id=new_id("lnp"), withdrawal_id=wd.id, payment_hash=inv.payment_hash,
        bolt11=inv.bolt11, amountless=inv.invoice_amount_msat is None,
        attempt=int(earlier or 0) + 1,
        amount_msat=inv.amount_msat, fee_limit_msat=wd.fee_reserve_msat, fee_msat=None,
        status=LnPaymentStatus.PENDING,
        preimage=None, failure_reason=None, next_try_at=None, created_at=now, updated_at=now))
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent request took this payment hash first
        raise ConcurrentUpdate("this invoice is being paid by another request") from exc


# How long past a BOLT11's expiry before no send of it can still be paid (the node judges
# expiry by its own clock, and a send it took just before is recorded by then), and how
# long after an attempt was sent (``sent_at``) a send of it lost on the way could still turn
# up at the node at most (one the node took before our connection ended is recorded at once; one it
# did not is never made): far beyond either.
EXPIRY_MARGIN_SECONDS = 600
LOST_SEND_SECONDS = 3600


async def _failed_before(session: AsyncSession, payment_hash: str, pid: str
                         ) -> list[int | None]:
    """The node indexes the hash's other failed attempts failed on."""
    return list((await session.execute(select(LnPayment.node_index).where(
        LnPayment.payment_hash == payment_hash, LnPayment.id != pid,
        LnPayment.status == LnPaymentStatus.FAILED))).scalars())


def _its_own(result: PaymentResult, earlier: Sequence[int | None]) -> bool:
    """Whether the node's FAILED ``result`` is another record than every one the earlier
    attempts of the hash failed on (0: they failed with no record at the node)."""
    return result.index is not None and None not in earlier and result.index not in earlier


def _wait_over(bolt11: str, since: datetime) -> bool:
    d = decode(bolt11)
    return unix_time() > min(d.date + (d.expiry or 3600) + EXPIRY_MARGIN_SECONDS,
                             since.timestamp() + LOST_SEND_SECONDS)


async def release_held_payment(session: AsyncSession, wd: Withdrawal, *, bolt11: str,
                               settings: Settings) -> None:
    """A Lightning withdrawal the risk rules held (status ``review``, its hold placed, no
    payment row), released by its case: checked again as :func:`request_ln_withdrawal`
    checks a new one (the invoice still valid, not being paid from here, not one of ours
    left on the node), then queued for the payer exactly as that path queues it, and
    ``pending``. The caller has locked ``wd``."""
    inv = check_invoice(bolt11, network=settings.network, amount_msat=wd.amount_msat)
    ours_exists = await not_paid_here_and_ours(session, inv.payment_hash)
    if ours_exists:  # as _settle_internally: never pay one of ours while the node holds it
        raise PaymentRefused("this platform's invoice could not be taken off its node; "
                             "return the money instead")
    check_time_to_pay(inv, settings)
    now = utcnow()
    await _queue_payment(session, wd, inv, now)
    wd.status, wd.updated_at = WithdrawalStatus.PENDING, now
    await session.flush()


async def settle_held_internally(session: AsyncSession, wd: Withdrawal, *, wallet: Wallet,
                                 bolt11: str, settings: Settings,
                                 on_store_invoice: StoreInvoiceHook | None = None) -> None:
    """An internal payment the risk rules held (status ``review``: the invoice taken off the
    node and ``reserved`` for it, the amount held), released by its case: the hold is voided
    and the payment settled inside the ledger as :func:`pay_own_invoice` settles one (the
    same conditions on the invoice, but ``reserved`` instead of ``open``; the same refusals),
    ``confirmed``. The caller has locked ``wd``."""
    inv = check_invoice(bolt11, network=settings.network, amount_msat=wd.amount_msat)
    (outcome,) = await create_transfers(session, [TransferSpec(
        f"wd:{wd.id}:void", kind=TransferKind.VOID, pending_id=wd.hold_id,
        code="ln_withdrawal", ref=wd.id)])
    if not outcome.ok:
        raise RuntimeError(f"ledger refused to release {wd.id}: {outcome}")
    credited = await credit_settled(
        session, payment_hash=inv.payment_hash, paid_msat=wd.amount_msat, internal=True,
        debit_account_id=wallet.ledger_account_id, invoice_fee_bp=settings.invoice_fee_bp,
        payable_by=wallet.id, reserved=True,
        on_store_invoice=on_store_invoice)
    if not credited:
        await _refuse_own_invoice(session, wallet=wallet, payment_hash=inv.payment_hash,
                                  amount_msat=wd.amount_msat, reserved=True)
    wd.status, wd.fee_msat, wd.updated_at = WithdrawalStatus.CONFIRMED, 0, utcnow()
    await session.flush()
    await emit_withdrawal(session, wd, "confirmed")


async def not_paid_here_and_ours(session: AsyncSession, payment_hash: str) -> bool:
    """Refuse an invoice being (or already) paid from here; whether it is one of ours. One
    read for both."""
    live, ours = (await session.execute(select(
        select(LnPayment.id).where(LnPayment.payment_hash == payment_hash,
                                   LnPayment.status.in_(_LIVE)).exists(),
        select(LnInvoice.payment_hash).where(
            LnInvoice.payment_hash == payment_hash).exists()))).one()
    if live:
        raise PaymentRefused("this invoice is already paid, or being paid, from here")
    return bool(ours)


def _released(settings: Settings) -> Any:
    """Free to leave: not held for approvers (the withdrawal policy may keep a payment's
    withdrawal in ``awaiting_approval``; its payment is queued but nobody sends it until it is
    approved), and :func:`~satvault.payouts.service.free_to_leave`: not from a frozen wallet,
    nor above its owner's tier now (frozen, or the tier lowered, after the payment was
    queued: it waits, held, until the wallet is unfrozen or the tier allows it again, or the
    withdrawal is returned)."""
    return ~select(Withdrawal.id).where(
        Withdrawal.id == LnPayment.withdrawal_id,
        (Withdrawal.status == WithdrawalStatus.AWAITING_APPROVAL)
        | ~free_to_leave(settings)).exists()


_LIVE = LIVE_PAYMENTS


def success_problem(result: PaymentResult, *, payment_hash: str, amount_msat: int
                    ) -> str | None:
    """Why a node's report that a payment succeeded cannot be booked as it stands, or None:
    its preimage must hash to the payment hash (the proof of payment), its fee may not be
    negative, and the amount it says it paid, when it says one, is the payment's. Found from
    outside: a success with a fee of -900,000 msat was booked, the wallet charged 100,000
    msat for a payment of 1,000,000, and a preimage of another hash stored as its proof; a
    node (or whatever stands between it and satvault) that lies is not believed."""
    preimage = (result.preimage or "").lower()
    try:
        proof = sha256(bytes.fromhex(preimage)).hexdigest() if len(preimage) == 64 else ""
    except ValueError:
        proof = ""
    if proof != payment_hash.lower():
        return "its preimage does not hash to the payment hash"
    if result.fee_msat < 0:
        return f"its fee is negative ({result.fee_msat} msat)"
    if result.amount_msat and result.amount_msat != amount_msat:
        return f"it says {result.amount_msat} msat were paid, the payment is {amount_msat}"
    return None


async def _hold_unproven(session: AsyncSession, p: LnPayment, problem: str) -> None:
    """Keep a payment whose reported success does not check out ``unknown`` (its money held,
    asked about again at every pass), and open one review item for it."""
    p.status, p.updated_at = LnPaymentStatus.UNKNOWN, utcnow()
    p.failure_reason = f"success not booked: {problem}"[:120]
    subject = f"ln_payment:{p.id}"
    opened = (await session.execute(select(ReviewItem.id).where(
        ReviewItem.kind == ReviewKind.LN_PAYMENT_UNPROVEN, ReviewItem.subject == subject,
        ReviewItem.resolved_at.is_(None)))).first()
    if opened is None:
        session.add(ReviewItem(
            kind=ReviewKind.LN_PAYMENT_UNPROVEN, subject=subject, created_at=utcnow(),
            details=json.dumps({  # JSON, as every kind's details
                "withdrawal_id": p.withdrawal_id, "payment_hash": p.payment_hash,
                "reason": f"the node reported it succeeded, but {problem}: nothing is "
                          "booked, its money stays held. Check the node and what stands "
                          "between it and satvault"})))
        log.error("ln_payment_success_unproven", payment=p.id, withdrawal=p.withdrawal_id,
                  problem=problem)


async def pay_own_invoice(session: AsyncSession, *, wallet: Wallet, payment_hash: str,
                          amount_msat: int, destination: str, settings: Settings,
                          store_id: str | None = None, invoice_id: str | None = None,
                          on_store_invoice: StoreInvoiceHook | None = None,
                          wid: str | None = None, also: BoundInsert | None = None) -> Withdrawal:
    """An invoice of ours, already taken off the node (:func:`take_off_node`,
    :func:`cancel_on_node`): settle it inside the ledger with as few statements as the
    checks allow. The withdrawal is written under the daily limit in one
    statement; the invoice is checked (open, not being paid from here, not the payer's own,
    the right amount), locked and marked paid in another; on a refusal the slow path
    (:func:`_settle_internally`'s checks, in the same order) says why. ``wid``: the
    withdrawal's id, if the caller chose it; ``also``: an INSERT written with the withdrawal
    (:func:`~satvault.payouts.service.insert_within_daily_limit`)."""
    now = utcnow()
    wid = wid or new_id("wd")
    wd = Withdrawal(id=wid, wallet_id=wallet.id, method=WithdrawalMethod.INTERNAL,
                    destination=destination, script_pubkey=None, amount_msat=amount_msat,
                    fee_reserve_msat=0,
                    fee_msat=0, status=WithdrawalStatus.CONFIRMED, batch_id=None, txid=None,
                    hold_id=f"wd:{wid}:internal", invoice_id=invoice_id, created_at=now,
                    updated_at=now, store_id=store_id)
    await insert_within_daily_limit(session, wd, wallet=wallet, settings=settings, also=also)
    credited = await credit_settled(
        session, payment_hash=payment_hash, paid_msat=amount_msat, internal=True,
        debit_account_id=wallet.ledger_account_id, invoice_fee_bp=settings.invoice_fee_bp,
        payable_by=wallet.id,
        on_store_invoice=on_store_invoice)
    if not credited:
        await _refuse_own_invoice(session, wallet=wallet, payment_hash=payment_hash,
                                  amount_msat=amount_msat)
    await emit_withdrawal_events(session, wd, ("created", "confirmed"))
    return wd


async def _refuse_own_invoice(session: AsyncSession, *, wallet: Wallet, payment_hash: str,
                              amount_msat: int, reserved: bool = False) -> None:
    """Why :func:`pay_own_invoice` (``reserved``: a held payment's release) could not
    settle: the reason the full checks give, in their order. Raises (the caller's
    unit of work rolls back)."""
    live = (await session.execute(select(LnPayment.id).where(
        LnPayment.payment_hash == payment_hash, LnPayment.status.in_(_LIVE)))).first()
    if live is not None:
        raise PaymentRefused("this invoice is already paid, or being paid, from here")
    ours = (await session.execute(select(LnInvoice).where(
        LnInvoice.payment_hash == payment_hash))).scalar_one_or_none()
    if ours is None:  # it was ours when it was taken off the node; invoices are not deleted
        raise ConcurrentUpdate("the invoice changed meanwhile; try again")
    _refuse_internal(ours, wallet=wallet, amount_msat=amount_msat, reserved=reserved)
    raise ConcurrentUpdate("the invoice changed meanwhile; try again")


async def refuse_ours_not_taken(session: AsyncSession, *, wallet: Wallet, payment_hash: str,
                                amount_msat: int) -> None:
    """One of our invoices on the path of a payment for the node (not taken off the node):
    refused as :func:`request_ln_withdrawal` refuses it, its own refusal first (the payer's own
    invoice, one paid or of another amount), else as not taken off the node. Always raises."""
    invoice = (await session.execute(select(LnInvoice).where(
        LnInvoice.payment_hash == payment_hash))).scalar_one()
    _refuse_internal(invoice, wallet=wallet, amount_msat=amount_msat)
    raise PaymentRefused("this platform's invoice could not be taken off its node; try again")


def _refuse_internal(invoice: LnInvoice, *, wallet: Wallet, amount_msat: int,
                     reserved: bool = False) -> None:
    """The refusals of paying one of our own invoices, in the order clients see them
    (``reserved``: the invoice must be reserved for this payment, not open)."""
    if invoice.wallet_id == wallet.id:
        raise PaymentRefused("this invoice was issued to your own wallet; paying it would "
                             "move nothing")
    expected = LnInvoiceStatus.RESERVED if reserved else LnInvoiceStatus.OPEN
    if invoice.status == LnInvoiceStatus.RESERVED and not reserved:
        raise InvoiceUnderReview
    if invoice.status != expected:
        raise PaymentRefused(f"this invoice is {invoice.status}")
    if invoice.amount_msat is not None and amount_msat != invoice.amount_msat:
        raise PaymentRefused("the amount differs from the invoice's")


async def reserve_own_invoice(session: AsyncSession, *, wallet: Wallet, payment_hash: str,
                              amount_msat: int) -> None:
    """An internal payment the risk rules hold for review (its invoice already taken off the
    node): the invoice is ``reserved`` for it, on the conditions :func:`pay_own_invoice`
    settles one on (open, not the payer's own, of that amount or amountless, not being paid
    from here), in one statement; otherwise the same refusals (raises). The row is the
    guard: one payment reserves an invoice, a second one held, or one paid, meanwhile is
    refused under its lock."""
    being_paid = select(LnPayment.id).where(LnPayment.payment_hash == payment_hash,
                                            LnPayment.status.in_(_LIVE)).exists()
    reserved = (await session.execute(
        update(LnInvoice).where(
            LnInvoice.payment_hash == payment_hash, LnInvoice.status == LnInvoiceStatus.OPEN,
            LnInvoice.wallet_id != wallet.id,
            LnInvoice.amount_msat.is_(None) | (LnInvoice.amount_msat == amount_msat),
            ~being_paid)
        .values(status=LnInvoiceStatus.RESERVED)
        .returning(LnInvoice.id, LnInvoice.store_invoice_id)
        .execution_options(synchronize_session=False))).first()
    if reserved is None:
        await _refuse_own_invoice(session, wallet=wallet, payment_hash=payment_hash,
                                  amount_msat=amount_msat)
        return
    if reserved[1] is not None:  # no more than the store invoice asks for (found from
        # outside: a held payment of the first BOLT11 after a partial payment, released,
        # paid the invoice over; its release is checked too: credit_settled)
        await refuse_more_than_due(session, reserved[1], amount_msat)


async def _settle_internally(session: AsyncSession, *, wallet: Wallet, invoice: LnInvoice,
                             amount_msat: int, wid: str, destination: str,
                             taken_off_node: bool, fee_bp: int = 0,
                             store_id: str | None = None, invoice_id: str | None = None,
                             on_store_invoice: StoreInvoiceHook | None = None) -> Withdrawal:
    _refuse_internal(invoice, wallet=wallet, amount_msat=amount_msat)
    now = utcnow()
    wd = Withdrawal(id=wid, wallet_id=wallet.id, method=WithdrawalMethod.INTERNAL,
                    destination=destination,
                    script_pubkey=None, amount_msat=amount_msat, fee_reserve_msat=0, fee_msat=0,
                    status=WithdrawalStatus.CONFIRMED, batch_id=None, txid=None,
                    hold_id=f"wd:{wid}:internal", invoice_id=invoice_id,
                    created_at=now, updated_at=now, store_id=store_id)
    session.add(wd)
    await session.flush()
    await credit_settled(session, payment_hash=invoice.payment_hash, paid_msat=amount_msat,
                         internal=True, debit_account_id=wallet.ledger_account_id,
                         invoice_fee_bp=fee_bp,
                         on_store_invoice=on_store_invoice)  # the ledger's refusals come first
    if not taken_off_node:
        # Settling it here while the node could still be paid from outside would let the
        # payee be paid twice; the caller must take it off the node first. Rolls back.
        raise PaymentRefused("this platform's invoice could not be taken off its node; "
                             "try again")
    return wd


@dataclass
class PayerReport:
    started: int = 0
    deferred: int = 0  # due, but left for later by the concurrency bounds
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    unknown: int = 0
    retried: int = 0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: PayerReport) -> None:
        for name in ("started", "sent", "succeeded", "failed", "unknown", "retried"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors


class LightningPayer:
    """Sends queued payments and reconciles the ones whose outcome is not yet known.

    Each payment is sent and followed by its own task, up to ``ln_payer_concurrency`` at once
    and at most ``ln_payer_per_destination`` to one receiving node: a receiver that holds its
    HTLCs for a long time ties up its own few slots, never everybody else's payments.
    :meth:`dispatch` starts what is due and returns at once (the worker's tick);
    :meth:`step` also waits for every task (tests, the CLI)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: LightningBackend,
                 settings: Settings) -> None:
        self.sessions = sessions
        self.backend = backend
        self.settings = settings
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dest_of: dict[str, str] = {}  # payment id -> receiving node, while in a task

    @property
    def busy(self) -> int:
        """Payments being sent or followed right now."""
        return len(self._tasks)

    async def step(self) -> PayerReport:
        report = await self.dispatch()
        await self.drain()
        while report.deferred:  # more were due than the bounds let start at once
            more = await self.dispatch()
            await self.drain()
            report.merge(more)
            report.deferred = more.deferred
        return report

    async def dispatch(self) -> PayerReport:
        """Start a task for each due payment and each payment to reconcile, within the
        bounds; the report fills in as the tasks finish."""
        report = PayerReport()
        room = self.settings.ln_payer_concurrency - len(self._tasks)
        if room <= 0:
            return report
        async with self.sessions() as s:
            due = (await s.execute(select(LnPayment.id, LnPayment.bolt11).where(
                LnPayment.status.in_((LnPaymentStatus.PENDING, LnPaymentStatus.RETRY)),
                (LnPayment.next_try_at.is_(None)) | (LnPayment.next_try_at <= utcnow()),
                _released(self.settings),
            ).order_by(LnPayment.created_at).limit(room + len(self._tasks) * 4 + 64))).all()
            open_ = (await s.execute(select(LnPayment.id).where(
                LnPayment.status.in_((LnPaymentStatus.IN_FLIGHT, LnPaymentStatus.UNKNOWN))
            ).order_by(
                LnPayment.updated_at).limit(room + len(self._tasks)))).scalars().all()
        per_dest = Counter(self._dest_of.values())
        for pid, bolt11 in due:
            if pid in self._tasks:
                continue
            if len(self._tasks) >= self.settings.ln_payer_concurrency:
                report.deferred += 1
                continue
            dest = _receiver(bolt11)
            if per_dest[dest] >= self.settings.ln_payer_per_destination:
                report.deferred += 1
                continue  # this receiver has its share in flight; others go first
            per_dest[dest] += 1
            self._start(pid, dest, self._send(pid, report), report)
        for pid in open_:
            if len(self._tasks) >= self.settings.ln_payer_concurrency:
                break
            if pid not in self._tasks:
                self._start(pid, "", self._reconcile(pid, report), report)
        return report

    def _start(self, pid: str, dest: str, work: Coroutine[Any, Any, None],
               report: PayerReport) -> None:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the payment stays where it was; the next tick retries
                report.errors.append(f"{pid}: {type(exc).__name__}: {exc}")
                log.exception("ln_payer_task_failed", payment=pid)
            finally:
                self._tasks.pop(pid, None)
                self._dest_of.pop(pid, None)

        self._dest_of[pid] = dest
        self._tasks[pid] = asyncio.create_task(run(), name=f"ln-pay:{pid}")
        report.started += 1

    async def drain(self) -> None:
        """Wait until every running send and reconciliation has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        """Stop the tasks. A payment cut off mid-send stays in flight in the database and is
        reconciled with the node at the next start: never failed, never refunded."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _claim(self, pid: str) -> LnPayment | None:
        async def work(s: AsyncSession) -> LnPayment | None:
            res = await s.execute(update(LnPayment).where(
                LnPayment.id == pid,
                LnPayment.status.in_((LnPaymentStatus.PENDING, LnPaymentStatus.RETRY)),
                _released(self.settings),
            ).values(status=LnPaymentStatus.IN_FLIGHT, updated_at=utcnow(), sent_at=utcnow()))
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return None  # another worker took it
            payment = await s.get(LnPayment, pid)
            assert payment is not None
            wd = await s.get(Withdrawal, payment.withdrawal_id)
            if wd is not None and wd.status == WithdrawalStatus.PENDING:  # it is about to leave
                wd.status, wd.updated_at = WithdrawalStatus.BROADCAST, utcnow()
                await emit_withdrawal(s, wd, "broadcast")
            return payment
        return await retrying(self.sessions, work)

    async def _send(self, pid: str, report: PayerReport) -> None:
        payment = await self._claim(pid)
        if payment is None:
            return
        report.sent += 1
        started = time.monotonic()
        try:
            result = await self.backend.pay(
                payment.bolt11,
                amount_msat=payment.amount_msat if payment.amountless else None,
                fee_limit_msat=payment.fee_limit_msat,
                timeout_seconds=self.settings.ln_pay_timeout_seconds)
        except BackendUnavailable as exc:
            await self._mark(pid, LnPaymentStatus.UNKNOWN, str(exc))
            report.unknown += 1
            PAYMENTS.labels("lightning", "unknown").inc()
            log.warning("ln_payment_unknown", payment=pid, error=str(exc))
            return
        except LndError as exc:
            if exc.code in (6, 9) or "transition" in exc.reason or "already" in exc.reason:
                # Already paid or being paid (an earlier attempt): the node knows; ask it.
                await self._mark(pid, LnPaymentStatus.UNKNOWN, str(exc))
                report.unknown += 1
                return
            # LND answered with an error before any update: a refusal (expired, bad amount
            # …) if the node has no record of the payment (checked below).
            result = PaymentResult(payment.payment_hash, PaymentStatus.FAILED,
                                   failure_reason=f"refused: {exc.reason}"[:120])
        except BackendError as exc:  # anything else: the outcome is unknown, ask later
            await self._mark(pid, LnPaymentStatus.UNKNOWN, str(exc))
            report.unknown += 1
            PAYMENTS.labels("lightning", "unknown").inc()
            return
        else:
            PAYMENT_SECONDS.labels("lightning").observe(time.monotonic() - started)
        if result.status is PaymentStatus.FAILED:
            confirmed = await self._failure_confirmed(pid, payment.payment_hash, result, report)
            if confirmed is None:
                return
            result = confirmed
        await self._apply(pid, result, report)

    async def _failure_confirmed(self, pid: str, payment_hash: str, result: PaymentResult,
                                 report: PayerReport) -> PaymentResult | None:
        """A failure the send reported releases the money only if the node's own record of
        the payment agrees: failed, or no record at all (a node records a payment before any
        part of it leaves, so none was sent). Otherwise the node's state stands (a part still
        in flight, or the payment succeeded); None if the node could not be asked (the payment
        is UNKNOWN and asked about again later)."""
        try:
            known = await self.backend.track_payment(payment_hash)
        except BackendError as exc:
            await self._mark(pid, LnPaymentStatus.UNKNOWN, f"failure not confirmed: {exc}")
            report.unknown += 1
            PAYMENTS.labels("lightning", "unknown").inc()
            return None
        if known is None:  # no record: nothing left; a later record is another attempt's
            return replace(result, index=0)
        if known.status is PaymentStatus.FAILED:
            if result.index is None:  # an error, not the node's update of this attempt
                async with self.sessions() as s:
                    earlier = await _failed_before(s, payment_hash, pid)
                if earlier and not _its_own(known, earlier):
                    # The record may be an earlier attempt's (found from outside): unknown,
                    # asked about as any lost send (``_reconcile``).
                    await self._mark(pid, LnPaymentStatus.UNKNOWN,
                                     f"refusal not confirmed: {result.failure_reason}")
                    report.unknown += 1
                    return None
            return replace(result, index=known.index)
        log.warning("ln_failure_not_confirmed", payment=pid, node_says=known.status.value,
                    reported=result.failure_reason)
        return known

    async def _mark(self, pid: str, status: LnPaymentStatus, why: str | None = None) -> None:
        async def work(s: AsyncSession) -> None:
            p = await s.get(LnPayment, pid, with_for_update=True)
            assert p is not None
            if p.status in (LnPaymentStatus.SUCCEEDED, LnPaymentStatus.FAILED):
                return
            p.status, p.updated_at = status, utcnow()
            if why:
                p.failure_reason = why[:120]
            wd = await s.get(Withdrawal, p.withdrawal_id)
            if wd is not None and wd.status == WithdrawalStatus.PENDING:
                wd.status, wd.updated_at = WithdrawalStatus.BROADCAST, utcnow()
                await emit_withdrawal(s, wd, "broadcast")
        await retrying(self.sessions, work)

    async def _reconcile(self, pid: str, report: PayerReport) -> None:
        async with self.sessions() as s:
            p = await s.get(LnPayment, pid)
            assert p is not None
            # (no sent_at: a row from before migration 0084, counted from its creation)
            payment_hash, bolt11, since = p.payment_hash, p.bolt11, p.sent_at or p.created_at
            earlier = await _failed_before(s, payment_hash, pid)
        try:
            result = await self.backend.track_payment(payment_hash)
        except BackendError as exc:
            report.errors.append(f"{pid}: {exc}")
            return
        if result is not None and result.status is PaymentStatus.FAILED and earlier \
                and not _its_own(result, earlier) and not _wait_over(bolt11, since):
            # The node keeps one record per hash: this FAILED may be an earlier attempt's, and
            # this one's send, lost on the way, may still reach the node and be paid (found
            # from outside: a retry whose send timed out was failed on the first attempt's
            # record, its hold voided, and the node then paid it). It stays unknown, its
            # money held, until the node's record is another than the one the earlier attempt
            # failed on, or (a node that numbers no records) the invoice has expired or an
            # hour has passed, when no lost send of it can be paid any more. Asked again
            # after the others (found from outside: such payments, asked first at every
            # tick, took every slot, and nobody else's payment was looked at).
            log.info("ln_failure_may_be_an_earlier_attempts", payment=pid)
            await self._touch(pid)
            return
        if result is None:
            # The node has no record of it: it never left. Sending again is safe (the node
            # refuses a second payment of a hash it is already paying or has paid).
            async def requeue(s: AsyncSession) -> None:
                await s.execute(update(LnPayment).where(
                    LnPayment.id == pid,
                    LnPayment.status.in_((LnPaymentStatus.IN_FLIGHT, LnPaymentStatus.UNKNOWN))
                ).values(status=LnPaymentStatus.PENDING, updated_at=utcnow()))
            await retrying(self.sessions, requeue)
            return
        await self._apply(pid, result, report)

    async def _touch(self, pid: str) -> None:
        """Put a payment still to be asked about behind the others (``dispatch`` asks the
        longest unchanged first)."""
        async def work(s: AsyncSession) -> None:
            await s.execute(update(LnPayment).where(
                LnPayment.id == pid,
                LnPayment.status.in_((LnPaymentStatus.IN_FLIGHT, LnPaymentStatus.UNKNOWN))
            ).values(updated_at=utcnow()))
        await retrying(self.sessions, work)

    async def _apply(self, pid: str, result: PaymentResult, report: PayerReport) -> None:
        if result.status is PaymentStatus.IN_FLIGHT:
            await self._mark(pid, LnPaymentStatus.IN_FLIGHT)
            return
        if result.status is PaymentStatus.SUCCEEDED:
            if await retrying(self.sessions, lambda s: self._succeed(s, pid, result)):
                report.succeeded += 1
                PAYMENTS.labels("lightning", "succeeded").inc()
            else:
                report.unknown += 1
            return
        retried = await retrying(self.sessions, lambda s: self._fail(s, pid, result))
        if retried:
            report.retried += 1
        else:
            report.failed += 1
        PAYMENTS.labels("lightning", "retried" if retried else "failed").inc()

    async def _succeed(self, session: AsyncSession, pid: str, result: PaymentResult) -> bool:
        """Book a success the node reported; False (nothing booked) if it is not one the
        books can take as it stands (:func:`success_problem`): the payment stays
        ``unknown`` with its money held and a person is told."""
        p = await session.get(LnPayment, pid, with_for_update=True)
        assert p is not None
        if p.status == LnPaymentStatus.SUCCEEDED:
            return True
        problem = success_problem(result, payment_hash=p.payment_hash,
                                  amount_msat=p.amount_msat)
        if problem is not None:
            await _hold_unproven(session, p, problem)
            return False
        wd = await session.get(Withdrawal, p.withdrawal_id, with_for_update=True)
        assert wd is not None
        fee = result.fee_msat
        platform = await ensure_platform_accounts(session, "BTC")
        covered = min(fee, wd.fee_reserve_msat)
        specs = [
            TransferSpec(f"wd:{wd.id}:post", kind=TransferKind.POST, pending_id=wd.hold_id,
                         amount=wd.amount_msat + covered, linked=True, code="ln_withdrawal",
                         ref=p.payment_hash),
            TransferSpec(f"wd:{wd.id}:out", platform.clearing.id, platform.lightning.id,
                         wd.amount_msat + covered, "BTC", linked=fee > covered,
                         code="ln_withdrawal", ref=p.payment_hash),
        ]
        if fee > covered:  # the node paid more than its limit: the platform absorbs it
            specs.append(TransferSpec(f"wd:{wd.id}:fee", platform.equity.id,
                                      platform.lightning.id, fee - covered, "BTC",
                                      code="ln_fee", ref=p.payment_hash))
        outcomes = await create_transfers(session, specs)
        if not all(o.ok for o in outcomes):
            raise RuntimeError(f"ledger refused the postings of {wd.id}: {outcomes}")
        p.status, p.fee_msat, p.preimage, p.updated_at = \
            LnPaymentStatus.SUCCEEDED, fee, result.preimage, utcnow()
        wd.status, wd.fee_msat, wd.updated_at = WithdrawalStatus.CONFIRMED, fee, utcnow()
        await emit_withdrawal(session, wd, "confirmed")
        log.info("ln_payment_succeeded", payment=pid, fee_msat=fee)
        return True

    async def _fail(self, session: AsyncSession, pid: str, result: PaymentResult) -> bool:
        """Definite failure: retry if retryable and attempts remain, else void. True = retried."""
        p = await session.get(LnPayment, pid, with_for_update=True)
        assert p is not None
        if p.status in (LnPaymentStatus.SUCCEEDED, LnPaymentStatus.FAILED):
            return False
        p.status, p.failure_reason, p.updated_at = \
            LnPaymentStatus.FAILED, result.failure_reason, utcnow()
        p.node_index = result.index  # the record it failed on: a later one is another's
        wd = await session.get(Withdrawal, p.withdrawal_id, with_for_update=True)
        assert wd is not None
        if result.failure_reason in RETRYABLE and p.attempt < self.settings.ln_max_attempts:
            await session.flush()
            session.add(LnPayment(
                id=new_id("lnp"), withdrawal_id=wd.id, payment_hash=p.payment_hash,
                bolt11=p.bolt11, amountless=p.amountless, attempt=p.attempt + 1,
                amount_msat=p.amount_msat, fee_limit_msat=p.fee_limit_msat,
                fee_msat=None, status=LnPaymentStatus.RETRY, preimage=None, failure_reason=None,
                next_try_at=utcnow() + timedelta(
                    seconds=self.settings.ln_retry_base_seconds * 2 ** (p.attempt - 1)),
                created_at=utcnow(), updated_at=utcnow()))
            log.info("ln_payment_retry", payment=pid, reason=result.failure_reason,
                     attempt=p.attempt + 1)
            return True
        (outcome,) = await create_transfers(session, [TransferSpec(
            f"wd:{wd.id}:void", kind=TransferKind.VOID, pending_id=wd.hold_id,
            code="ln_withdrawal_failed", ref=p.payment_hash)])
        if not outcome.ok:
            raise RuntimeError(f"ledger refused to release {wd.id}: {outcome}")
        wd.status, wd.updated_at = WithdrawalStatus.FAILED, utcnow()
        # A voucher this paid opens again (its hold placed anew), in this same transaction.
        await reopen_after_failure(session, wd)
        await emit_withdrawal(session, wd, "failed")
        log.warning("ln_payment_failed", payment=pid, reason=result.failure_reason)
        return False
