"""A withdraw voucher after its creation: opened again when its payment definitely fails,
expired when its optional ``expires_at`` has passed.

Redeeming a voucher voids its hold and requests an ordinary Lightning withdrawal (its own
hold, amount + fee reserve). If the node then says the payment failed, and its own record
agrees, the payer voids that withdrawal's hold (:class:`~satvault.lightning.payments.
LightningPayer`); :func:`reopen_after_failure`, called in the same transaction, opens the
voucher again: its holder got nothing, so its link pays again. The same holds for a
withdrawal cancelled before it left (its owner or an admin cancelling it while ``pending``,
approvers refusing it, a case returning it: ``satvault.withdrawals.cancel.void_and_cancel``).
An outcome that is not definite (a timeout, a node that cannot be asked, a payment still in
flight) never gets here, and the voucher stays used: that payment may still arrive.

* **Exactly once.** A conditional UPDATE (``used`` with this withdrawal → ``open``) claims the
  voucher; the new hold's id, ``lnurlw:<voucher>:hold:<withdrawal>``, is derived from the
  failed withdrawal, and the failure row's primary key is the withdrawal: a second run of the
  failure handling for the same withdrawal finds nothing to claim, and could not hold twice.
* **What is held.** The voucher's amount and fee reserve, as at its creation. The failed
  withdrawal's void has just given its own hold back; a voucher redeemed for less than its
  amount gave the rest back at redemption, and if the wallet has spent that meanwhile the
  voucher is narrowed to what the void gave back (its maximum becomes the failed payment's
  amount), so reopening never takes money the wallet no longer has.
* **Expiry.** A voucher may carry an ``expires_at``. Past it, redemption is refused
  (:func:`refusal`; the claim itself requires it, :func:`not_expired`) and the hold-expiry
  worker's :func:`expire_vouchers` marks it ``expired`` and voids its hold, with a
  conditional UPDATE: of a redemption and the expiry racing, exactly one claims it. A
  voucher reopened after a failure keeps its expiry and expires like any other.
* **History.** The voucher's ``withdrawal_id`` is cleared (an open voucher has none: a CHECK);
  the failed withdrawal stays in ``lnurl_voucher_failures`` and in the audit row
  ``lnurl_withdraw.reopen``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.audit.service import record
from satvault.db import utcnow
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.errors import TransferRejected
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import get_account, transfer
from satvault.lightning.lnurl_models import (
    LnurlVoucherFailure,
    LnurlWithdrawVoucher,
    VoucherStatus,
)
from satvault.logs import get_logger
from satvault.payouts.models import Withdrawal

__all__ = ["expire_vouchers", "failed_withdrawals", "not_expired", "refusal",
           "reopen_after_failure", "void_id"]

log = get_logger(__name__)
_NO_SYNC = {"synchronize_session": False}


def void_id(hold_id: str) -> str:
    """The id of the transfer that releases the voucher hold ``hold_id``: ``lnurlw:<v>:void``
    for the hold placed at creation, ``lnurlw:<v>:void:<withdrawal>`` for one placed when the
    voucher reopened after that withdrawal failed."""
    return hold_id.replace(":hold", ":void", 1)


async def failed_withdrawals(session: AsyncSession, voucher_id: str) -> list[str]:
    """The withdrawals of this voucher that failed (and after which it reopened), oldest
    first."""
    return list((await session.execute(
        select(LnurlVoucherFailure.withdrawal_id)
        .where(LnurlVoucherFailure.voucher_id == voucher_id)
        .order_by(LnurlVoucherFailure.failed_at, LnurlVoucherFailure.withdrawal_id)
    )).scalars())


class _Refused(Exception):
    pass


async def reopen_after_failure(session: AsyncSession, wd: Withdrawal, *,
                               actor: str = "lightning-payer") -> bool:
    """If ``wd`` (whose hold the caller has just voided, in this transaction, because it
    definitely paid nobody: the node failed it, or it was cancelled before it left) paid a
    voucher, open the voucher again with its hold placed anew. True if it did; False if
    ``wd`` paid no voucher or it was reopened for ``wd`` already."""
    voucher = (await session.execute(
        select(LnurlWithdrawVoucher).where(LnurlWithdrawVoucher.withdrawal_id == wd.id)
        .execution_options(populate_existing=True))).scalar_one_or_none()
    if voucher is None or voucher.status != VoucherStatus.USED:
        return False
    wallet = await session.get(Wallet, voucher.wallet_id)
    assert wallet is not None  # a foreign key
    amount, reserve, low = voucher.amount_msat, voucher.reserve_msat, voucher.min_msat
    balances = (await get_account(session, wallet.ledger_account_id)).balances
    free = balances.credits_posted - balances.debits_posted - balances.debits_pending
    if free < amount + reserve:  # a partial redemption's rest, spent meanwhile
        amount, reserve = wd.amount_msat, wd.fee_reserve_msat
        low = min(low, amount)
    hold_id = f"lnurlw:{voucher.id}:hold:{wd.id}"
    before = {"status": VoucherStatus.USED.value, "withdrawal_id": wd.id,
              "hold_id": voucher.hold_id, "amount_msat": voucher.amount_msat}
    try:
        async with session.begin_nested():
            claimed = await session.execute(
                update(LnurlWithdrawVoucher)
                .where(LnurlWithdrawVoucher.id == voucher.id,
                       LnurlWithdrawVoucher.status == VoucherStatus.USED,
                       LnurlWithdrawVoucher.withdrawal_id == wd.id)
                .values(status=VoucherStatus.OPEN, withdrawal_id=None, closed_at=None,
                        hold_id=hold_id, amount_msat=amount, reserve_msat=reserve,
                        min_msat=low)
                .execution_options(**_NO_SYNC))
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise _Refused("claimed concurrently")
            await session.execute(insert(LnurlVoucherFailure).values(
                withdrawal_id=wd.id, voucher_id=voucher.id, failed_at=utcnow()))
            platform = await ensure_platform_accounts(session, "BTC")
            await transfer(session, TransferSpec(
                hold_id, wallet.ledger_account_id, platform.clearing.id, amount + reserve,
                "BTC", kind=TransferKind.PENDING, code="lnurl_withdraw", ref=voucher.id))
    except (_Refused, TransferRejected) as exc:
        # Never the failure's own bookkeeping: the withdrawal is recorded failed all the same
        # and the voucher stays used, as before reopening existed.
        log.error("lnurl_voucher_not_reopened", voucher=voucher.id, withdrawal=wd.id,
                  error=str(exc))
        return False
    await record(session, actor=actor, action="lnurl_withdraw.reopen",
                 object=voucher.id, before=before,
                 after={"status": VoucherStatus.OPEN.value, "withdrawal_id": None,
                        "hold_id": hold_id, "amount_msat": amount, "min_msat": low,
                        "held_msat": amount + reserve})
    log.info("lnurl_voucher_reopened", voucher=voucher.id, withdrawal=wd.id,
             held_msat=amount + reserve)
    return True


def refusal(voucher: LnurlWithdrawVoucher, now: datetime) -> str | None:
    """Why this voucher cannot be redeemed now (the reason its wallet is told); None if it
    can. An open voucher past its expiry is refused before the sweep has marked it."""
    if voucher.status == VoucherStatus.USED:
        return "already used"
    if voucher.status == VoucherStatus.CANCELED:
        return "this withdraw link was canceled"
    if voucher.status == VoucherStatus.EXPIRED or \
            (voucher.expires_at is not None and voucher.expires_at <= now):
        return "this withdraw link has expired"
    return None


def not_expired(now: datetime) -> ColumnElement[bool]:
    """The condition a redemption's claim adds: the voucher has no expiry, or it is later."""
    return or_(LnurlWithdrawVoucher.expires_at.is_(None),
               LnurlWithdrawVoucher.expires_at > now)


async def expire_vouchers(session: AsyncSession, *, now: datetime | None = None,
                          limit: int = 200) -> int:
    """Expire open vouchers past their ``expires_at`` and release their holds; how many. Each
    is claimed by a conditional UPDATE (still open, still past its expiry, the hold read): a
    redemption that claimed it first (its own UPDATE requires the expiry to be later) wins,
    and so does another process's sweep."""
    now = now or utcnow()
    due = (await session.execute(
        select(LnurlWithdrawVoucher.id, LnurlWithdrawVoucher.hold_id)
        .where(LnurlWithdrawVoucher.status == VoucherStatus.OPEN,
               LnurlWithdrawVoucher.expires_at <= now)
        .order_by(LnurlWithdrawVoucher.expires_at).limit(limit))).all()
    expired = 0
    for vid, hold_id in due:
        claimed = await session.execute(
            update(LnurlWithdrawVoucher)
            .where(LnurlWithdrawVoucher.id == vid,
                   LnurlWithdrawVoucher.status == VoucherStatus.OPEN,
                   LnurlWithdrawVoucher.expires_at <= now,
                   LnurlWithdrawVoucher.hold_id == hold_id)
            .values(status=VoucherStatus.EXPIRED, closed_at=now)
            .execution_options(**_NO_SYNC))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # redeemed, cancelled or expired by someone else meanwhile
        await transfer(session, TransferSpec(
            void_id(hold_id), kind=TransferKind.VOID, pending_id=hold_id,
            code="lnurl_withdraw", ref=vid))
        await record(session, actor="hold-expiry", action="lnurl_withdraw.expire", object=vid,
                     before={"status": VoucherStatus.OPEN.value},
                     after={"status": VoucherStatus.EXPIRED.value})
        expired += 1
    if expired:
        log.info("lnurl_vouchers_expired", count=expired)
    return expired
