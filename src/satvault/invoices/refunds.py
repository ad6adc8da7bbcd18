"""Refunds: a withdrawal from the merchant's wallet to a destination the customer gave, at
most what the invoice received (all refunds of it together); the store's webhooks hear
``withdrawal.*``. A refund without an amount (and to a destination that names none: an LNURL,
a Lightning Address, an amountless BOLT11) sends what is left of that after earlier refunds.

The two halves of :mod:`satvault.withdrawals.service`: :func:`prepare_refund` reads the
invoice in a short session, checks the amount and resolves the destination with no
transaction open; :func:`record_refund` runs in the caller's unit of work, locks the invoice
so concurrent refunds of it are counted one after the other, and requests the withdrawal.
"""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.access import require_holder
from satvault.accounts.models import Wallet
from satvault.accounts.service import Principal
from satvault.backends.lightning import LightningBackend
from satvault.config import Settings
from satvault.invoices.access import visible_invoice
from satvault.invoices.service import received_msat
from satvault.kernel.errors import InvalidInput
from satvault.lightning.bolt11check import check_invoice, decode
from satvault.lightning.errors import LightningError
from satvault.lightning.invoices import StoreInvoiceHook
from satvault.onchain.bip21 import parse_bip21
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.withdrawals.policy.service import initiator_of_principal
from satvault.withdrawals.service import (
    PreparedDestination,
    destination_kind,
    prepare_destination,
    withdraw,
)

__all__ = ["prepare_refund", "record_refund"]


def _has_amount(bolt11: str) -> bool:
    try:
        return decode(bolt11).amount_msat is not None
    except LightningError:
        return True  # check_invoice says what is wrong with it


async def _refunded_msat(session: AsyncSession, invoice_id: str) -> int:
    """What the refunds of the invoice add up to (all but the failed and cancelled ones)."""
    return int((await session.execute(
        select(func.coalesce(func.sum(Withdrawal.amount_msat), 0)).where(
            Withdrawal.invoice_id == invoice_id,
            Withdrawal.status.not_in((WithdrawalStatus.FAILED, WithdrawalStatus.CANCELLED))
        ))).scalar_one())


def _over_the_cap(received: int, left: int) -> InvalidInput:
    if received <= 0:  # found from outside: "already add up to what it received (0 msat)"
        return InvalidInput("this invoice has received no payment: there is nothing to "
                            "refund")
    if left <= 0:
        return InvalidInput(f"nothing is left to refund: refunds of this invoice already add "
                            f"up to what it received ({received} msat)")
    return InvalidInput(f"refunds of this invoice can add up to what it received "
                        f"({received} msat); {left} msat are left")


async def prepare_refund(sessions: async_sessionmaker[AsyncSession], *, principal: Principal,
                         invoice_id: str, destination: str, amount_msat: int | None,
                         settings: Settings, lightning: LightningBackend | None,
                         http: httpx.AsyncClient | None = None
                         ) -> tuple[int, PreparedDestination]:
    """The amount to refund (``amount_msat``, else what a BOLT11 asks, else what is left of
    what the invoice received after its earlier refunds) and the destination resolved, before
    any transaction opens. :func:`record_refund` checks the amount again under the lock."""
    # A short read, then the remote part (LNURL resolution) with no transaction open.
    async with sessions() as session:
        inv = await visible_invoice(session, principal, invoice_id)
        received = await received_msat(session, inv)
        left = received - await _refunded_msat(session, inv.id)
        wallet = await session.get(Wallet, inv.wallet_id)
        assert wallet is not None
        require_holder(principal, wallet)  # the merchant's money: an admin sees it only
    amount = amount_msat
    given = amount
    if amount is None and destination_kind(destination) == "bolt11" \
            and _has_amount(destination):
        # A BOLT11 with its own amount decides; check that amount against the cap.
        decoded = check_invoice(destination, network=settings.network, amount_msat=None)
        amount = decoded.amount_msat
        given = None
    elif amount is None:  # what is left, to a destination that names no amount
        if left <= 0:
            raise _over_the_cap(received, left)
        amount = left
        if destination_kind(destination) == "bolt11":  # amountless: we choose the amount
            amount = check_invoice(destination, network=settings.network,
                                   amount_msat=left).amount_msat
        elif destination_kind(destination) == "onchain":
            # A payment URI's own amount decides, as a BOLT11's does (found from outside:
            # what is left was chosen instead, and refused as differing from the URI's).
            # Otherwise the chain carries whole satoshis: what is left, rounded down (found
            # from outside: a fiat invoice paid over Lightning leaves msat, refused as is).
            text = destination.strip()
            asked = parse_bip21(text).amount_sat if text.lower().startswith("bitcoin:") \
                else None
            amount = asked * 1000 if asked else left - left % 1000
            if amount <= 0 or amount > left:
                raise _over_the_cap(received, left)
        given = amount
    if amount <= 0 or amount > left:
        raise _over_the_cap(received, left)
    prepared = await prepare_destination(sessions, settings=settings, lightning=lightning,
                                         wallet=wallet, destination=destination,
                                         amount_msat=given, http=http)
    return amount, prepared


async def record_refund(session: AsyncSession, *, principal: Principal, invoice_id: str,
                        amount: int, prepared: PreparedDestination, settings: Settings,
                        lightning: LightningBackend | None,
                        payer_wake: asyncio.Event | None = None,
                        on_store_invoice: StoreInvoiceHook | None = None) -> Withdrawal:
    """The refund's withdrawal, in the caller's unit of work, if what is left allows it."""
    inv = await visible_invoice(session, principal, invoice_id)
    # Lock the invoice: concurrent refunds of it are counted one after the other.
    await session.refresh(inv, with_for_update=True)
    refunded = await _refunded_msat(session, inv.id)
    # What its payments credited now: the stored figure may lag a reorg's reversal (the
    # refresher's next pass) or have been left behind by a mark.
    received = await received_msat(session, inv)
    left = received - refunded
    if amount <= 0 or amount > left:
        raise _over_the_cap(received, left)

    async def wallet_for(s: AsyncSession) -> Wallet:
        wallet = await s.get(Wallet, inv.wallet_id)
        assert wallet is not None
        return wallet

    # Whoever asks for a refund chooses where it goes: like any withdrawal's initiator, they
    # never approve it themselves if the withdrawal policy holds it for approvers.
    initiator = await initiator_of_principal(session, principal)
    wd = await withdraw(session, settings=settings, lightning=lightning, wallet_for=wallet_for,
                        prepared=prepared, store_id=inv.store_id, invoice_id=inv.id,
                        payer_wake=payer_wake,
                        on_store_invoice=on_store_invoice, purpose="refund",
                        initiator=initiator)
    # The link the cap above sums by is written with the row, on every path (an internal
    # payment writes it with a statement of its own), and named in its events from the first.
    return wd
