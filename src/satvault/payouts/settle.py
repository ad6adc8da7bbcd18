"""How a payout batch ends for its withdrawals, shared by the payout job and by a person
resolving a ``stuck`` batch (:mod:`satvault.reconcile.stuck`): one code path each.

* :func:`book_payout`: a transaction that pays the batch's withdrawals has confirmed; their
  holds are posted (each ``amount + its share of the fee``, the share capped by its fee
  reserve; the platform pays what is above it) and they are ``confirmed`` with that txid.
* :func:`give_up`: no version of the batch can ever confirm; it is ``abandoned``, the coins
  it reserved are free again and its withdrawals go back to ``pending`` with their holds
  intact (:func:`give_up_at_signer` tells the signer first).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.audit import anchors
from satvault.db import utcnow
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.models import LedgerTransfer
from satvault.ledger.platform import PlatformAccounts
from satvault.ledger.store import create_transfers
from satvault.logs import get_logger
from satvault.onchain.models import OnchainPayment
from satvault.payouts.events import emit_withdrawal
from satvault.payouts.models import (
    BatchStatus,
    PayoutBatch,
    PayoutInput,
    Withdrawal,
    WithdrawalStatus,
)
from satvault.signing.base import Signer
from satvault.signing.errors import SignerProtocolError

__all__ = ["batch_withdrawals", "book_payout", "charged_fee_msat", "give_up",
           "give_up_at_signer", "rebook_payout", "release_coins", "requeue", "split_fee"]

log = get_logger(__name__)


def split_fee(fee_sat: int, n: int) -> list[int]:
    """Split a fee over n withdrawals so the shares add up exactly (first ones pay 1 more)."""
    base, rest = divmod(fee_sat, n)
    return [base + (1 if i < rest else 0) for i in range(n)]


async def batch_withdrawals(session: AsyncSession, batch_id: str) -> list[Withdrawal]:
    """The withdrawals a batch pays, oldest first (the order its fee is split in)."""
    return list((await session.execute(
        select(Withdrawal).where(Withdrawal.batch_id == batch_id)
        .order_by(Withdrawal.created_at, Withdrawal.id))).scalars().all())


async def book_payout(session: AsyncSession, *, batch_id: str, txid: str, fee_sat: int,
                      platform: PlatformAccounts) -> int:
    """Post the holds of the batch's withdrawals, paid by ``txid`` whose fee is ``fee_sat``,
    and emit ``withdrawal.confirmed``; how many there were. The caller holds the batch's
    row and moves the batch itself."""
    wds = await batch_withdrawals(session, batch_id)
    specs: list[TransferSpec] = []
    for w, share in zip(wds, split_fee(fee_sat, len(wds)), strict=True):
        user_share = min(share, w.fee_reserve_msat // 1000)
        excess = share - user_share
        debit = w.amount_msat + user_share * 1000
        specs += [
            TransferSpec(f"wd:{w.id}:post", kind=TransferKind.POST, pending_id=w.hold_id,
                         amount=debit, linked=True, code="withdrawal", ref=txid),
            TransferSpec(f"wd:{w.id}:out", platform.clearing.id, platform.hot_wallet.id,
                         debit, "BTC", linked=excess > 0, code="withdrawal", ref=txid),
        ]
        if excess:
            specs.append(TransferSpec(f"wd:{w.id}:fee", platform.network_fees.id,
                                      platform.hot_wallet.id, excess * 1000, "BTC",
                                      code="network_fee", ref=txid))
        w.status, w.txid, w.fee_msat, w.updated_at = WithdrawalStatus.CONFIRMED, txid, \
            share * 1000, utcnow()
    outcomes = await create_transfers(session, specs)
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise RuntimeError(f"ledger refused payout postings for {batch_id}: {bad}")
    for w in wds:
        await emit_withdrawal(session, w, "confirmed")
    log.info("payout_confirmed", batch=batch_id, txid=txid, withdrawals=len(wds))
    return len(wds)


async def rebook_payout(session: AsyncSession, *, batch_id: str, booked_txid: str,
                        booked_fee_sat: int, txid: str, fee_sat: int,
                        platform: PlatformAccounts, generation: int = 0) -> int:
    """Book the batch's withdrawals as paid by ``txid`` (fee ``fee_sat``), another version of
    the batch that confirmed after a reorg took the booked one (``booked_txid``, fee
    ``booked_fee_sat``) out of the chain: each payer gets back what it was charged above its
    share of the fee now, capped by its reserve (a lower fee), the platform's network fees
    the rest of the difference either way (a higher fee is the platform's: a payer is never
    charged again for a payout already confirmed), and ``withdrawal.confirmed`` again with
    the txid that paid it. How many withdrawals it names. The caller holds the batch's row and
    counts the batch's re-bookings before this one (``generation``: the chain may switch
    back and forth, and each switch moves money again)."""
    wds = await batch_withdrawals(session, batch_id)
    if not wds:
        return 0
    tag = f"{generation}:{booked_txid[:16]}>{txid[:16]}"
    specs: list[TransferSpec] = []
    back = 0  # msat
    for w, now in zip(wds, split_fee(fee_sat, len(wds)), strict=True):
        charged = await charged_fee_msat(session, w)
        give = charged - min(charged, min(now, w.fee_reserve_msat // 1000) * 1000)
        if give > 0:
            account = (await session.execute(select(Wallet.ledger_account_id).where(
                Wallet.id == w.wallet_id))).scalar_one()
            specs.append(TransferSpec(f"wd:{w.id}:rebook:{tag}", platform.hot_wallet.id,
                                      account, give, "BTC", code="withdrawal", ref=txid))
            back += give
        w.txid, w.fee_msat, w.updated_at = txid, now * 1000, utcnow()
    rest = (booked_fee_sat - fee_sat) * 1000 - back  # the platform's part of the difference
    if rest:
        debit, credit = ((platform.hot_wallet.id, platform.network_fees.id) if rest > 0
                         else (platform.network_fees.id, platform.hot_wallet.id))
        specs.append(TransferSpec(f"pob:{batch_id}:rebook:{tag}", debit, credit,
                                  abs(rest), "BTC", code="network_fee", ref=txid))
    if specs:
        bad = [o for o in await create_transfers(session, specs) if not o.ok]
        if bad:
            raise RuntimeError(f"ledger refused the re-booking of {batch_id}: {bad}")
    for w in wds:
        await emit_withdrawal(session, w, "confirmed")
    log.warning("payout_rebooked", batch=batch_id, was=booked_txid, now=txid,
                fee_was=booked_fee_sat, fee_now=fee_sat, back_to_payers_msat=back)
    return len(wds)


async def charged_fee_msat(session: AsyncSession, w: Withdrawal) -> int:
    """The network fee a confirmed withdrawal's payer bears now: what its hold's posting
    took above its amount, less what re-bookings gave back (:func:`rebook_payout`)."""
    posted = (await session.execute(select(LedgerTransfer.amount).where(
        LedgerTransfer.id == f"wd:{w.id}:post"))).scalar_one()
    given = (await session.execute(select(func.coalesce(func.sum(LedgerTransfer.amount), 0))
                                   .where(LedgerTransfer.id.startswith(f"wd:{w.id}:rebook:",
                                                                       autoescape=True))
                                   )).scalar_one()
    return int(posted) - w.amount_msat - int(given)


async def give_up(session: AsyncSession, *, batch_id: str, versions: Sequence[str],
                  error: str) -> list[Withdrawal]:
    """Abandon a batch none of whose ``versions`` can confirm: its coins free again, its
    withdrawals ``pending`` (returned, holds intact), its audit anchor left for the next
    sweep. The caller has made sure of that and of the batch's state."""
    b = await session.get(PayoutBatch, batch_id, with_for_update=True)
    assert b is not None
    b.status, b.last_error, b.updated_at = BatchStatus.ABANDONED, error, utcnow()
    await release_coins(session, batch_id=batch_id, versions=versions)
    requeued = await batch_withdrawals(session, batch_id)
    requeue(requeued)
    return requeued


def requeue(wds: Sequence[Withdrawal]) -> None:
    """Take withdrawals out of their batch, back to ``pending`` with their holds intact: the
    next pass batches them again."""
    for w in wds:
        w.status, w.batch_id, w.txid, w.updated_at = \
            WithdrawalStatus.PENDING, None, None, utcnow()


async def release_coins(session: AsyncSession, *, batch_id: str, versions: Sequence[str]
                        ) -> None:
    """Free the coins a batch reserved, none of whose ``versions`` will ever confirm, and
    leave its audit anchor for the next sweep."""
    # The watcher noted them spent by a version of it it saw in a mempool, and no version of
    # it will ever confirm now.
    await session.execute(update(OnchainPayment).where(
        OnchainPayment.spent_by.in_(versions)).values(spent_by=None, updated_at=utcnow()))
    await session.execute(delete(PayoutInput).where(PayoutInput.batch_id == batch_id))
    await anchors.release(session, batch_id=batch_id)  # the next sweep carries it


async def give_up_at_signer(signer: Signer, txids: Sequence[str], *, reason: str) -> None:
    """Tell the signer these versions will never confirm, before their withdrawals are
    batched again: it pays each withdrawal once, and without this it would refuse to pay
    them from other coins (``PaidBefore``). A signer that cannot be reached raises (nothing
    is given up); one older than the ``abandon`` method keeps no such memory, so there is
    nothing to tell it."""
    for txid in txids:
        try:
            await signer.abandon(txid, reason=reason)
        except SignerProtocolError as exc:
            log.warning("signer_abandon_unsupported", txid=txid, error=str(exc))
