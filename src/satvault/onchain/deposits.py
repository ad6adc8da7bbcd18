"""Deposit requests: one fresh address per request, its BIP21 URI, and what arrived.

A request's status is derived from its payments, never stored twice:
``open`` (nothing seen) → ``pending`` (seen, not yet confirmed enough) → ``paid`` (confirmed
total reaches the amount, or anything confirmed when no amount was asked) or ``partial``;
``expired`` when its time passed with nothing received. A payment that arrives after expiry is
still credited to the wallet (money is never lost) and shows as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.errors import InvalidInput, NotFound
from satvault.kernel.ids import new_id
from satvault.onchain.bip21 import make_bip21, msat_to_sat_ceil
from satvault.onchain.models import (
    ChainBlock,
    CreditState,
    DepositRequest,
    DepositStatus,
    OnchainAddress,
    OnchainPayment,
    OnchainPaymentStatus,
)
from satvault.onchain.service import allocate_address

__all__ = [
    "DepositView",
    "OpenedDeposit",
    "PaymentView",
    "create_deposit",
    "open_deposit",
    "view_deposit",
]

MAX_DEPOSIT_MSAT = 21_000_000 * 100_000_000 * 1000


@dataclass(frozen=True, slots=True)
class PaymentView:
    txid: str
    vout: int
    amount_msat: int
    confirmations: int
    status: OnchainPaymentStatus
    credit_state: CreditState


@dataclass(frozen=True, slots=True)
class DepositView:
    request: DepositRequest
    address: str
    bip21: str
    status: DepositStatus
    confirmed_msat: int
    pending_msat: int
    payments: tuple[PaymentView, ...]


async def create_deposit(session: AsyncSession, *, wallet: Wallet, settings: Settings,
                         amount_msat: int | None = None, description: str = "",
                         confirmations: int | None = None) -> DepositView:
    req = await open_deposit(session, wallet=wallet, settings=settings,
                             amount_msat=amount_msat, description=description,
                             confirmations=confirmations)
    await session.flush()
    return await view_deposit(session, req.id)


@dataclass(frozen=True, slots=True)
class OpenedDeposit:
    id: str
    address: str


async def open_deposit(session: AsyncSession, *, wallet: Wallet, settings: Settings,
                       amount_msat: int | None = None, description: str = "",
                       confirmations: int | None = None,
                       expires_at: datetime | None = None,
                       store_invoice_id: str | None = None) -> OpenedDeposit:
    """A deposit request with a freshly allocated address (no view: nothing has arrived).
    The request row is added to the session, not flushed: it goes in with the caller's next
    flush."""
    if amount_msat is not None and not 1000 <= amount_msat <= MAX_DEPOSIT_MSAT:
        raise InvalidInput("amount_msat must be at least 1 sat (1000 msat) and at most "
                           "21 million BTC")
    if len(description) > 256:
        raise InvalidInput("description is limited to 256 characters")
    required = settings.deposit_confirmations if confirmations is None else confirmations
    now = utcnow()
    expires = expires_at or now + timedelta(minutes=settings.deposit_expiry_minutes)
    request_id = new_id("dep")
    recycle = timedelta(days=settings.recycle_after_days) if settings.recycle_after_days else None
    alloc = await allocate_address(session, owner_type=wallet.owner_type,
                                   owner_id=wallet.owner_id, purpose="deposit",
                                   request_id=request_id, expires_at=expires,
                                   recycle_after=recycle)
    req = DepositRequest(id=request_id, wallet_id=wallet.id, method="onchain",
                         address_id=alloc.address_id, amount_msat=amount_msat,
                         description=description, required_confirmations=required,
                         status=DepositStatus.OPEN, created_at=now, expires_at=expires,
                         store_invoice_id=store_invoice_id)
    session.add(req)
    return OpenedDeposit(request_id, alloc.address)


async def tip_height(session: AsyncSession) -> int | None:
    return (await session.execute(select(func.max(ChainBlock.height)))).scalar_one_or_none()


def _status(req: DepositRequest, confirmed: int, pending: int, now: datetime
            ) -> DepositStatus:
    if confirmed and (req.amount_msat is None or confirmed >= req.amount_msat):
        return DepositStatus.PAID
    if confirmed:
        return DepositStatus.PARTIAL
    if pending:
        return DepositStatus.PENDING
    if req.expires_at is not None and now >= req.expires_at:
        return DepositStatus.EXPIRED
    return DepositStatus.OPEN


async def view_deposit(session: AsyncSession, deposit_id: str) -> DepositView:
    req = await session.get(DepositRequest, deposit_id)
    if req is None or req.address_id is None:
        raise NotFound(f"deposit {deposit_id!r} not found")
    addr = await session.get(OnchainAddress, req.address_id)
    assert addr is not None
    tip = await tip_height(session)
    rows = (await session.execute(select(OnchainPayment).where(
        OnchainPayment.request_id == req.id).order_by(OnchainPayment.id))).scalars().all()
    payments, confirmed, pending = [], 0, 0
    for p in rows:
        confs = (tip - p.block_height + 1) if (p.block_height is not None and tip) else 0
        msat = p.value_sat * 1000
        if p.status != OnchainPaymentStatus.CONFLICTED:
            if p.credit_state == CreditState.CREDITED:
                confirmed += msat
            else:
                pending += msat
        payments.append(PaymentView(p.txid, p.vout, msat, max(confs, 0), p.status,
                                    p.credit_state))
    sat = msat_to_sat_ceil(req.amount_msat) if req.amount_msat else None
    bip21 = make_bip21(addr.address, amount_sat=sat, message=req.description or None)
    return DepositView(req, addr.address, bip21, _status(req, confirmed, pending, utcnow()),
                       confirmed, pending, tuple(payments))
