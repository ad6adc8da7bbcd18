"""Refills: when the semi-cold wallet falls under its floor, the cold cosigners are asked for
coins, and nothing moves until enough of them have signed.

:class:`RefillPlanner` (run by the custody worker) notices the semi-cold ledger balance under
``semicold_floor_sat``, picks confirmed cold coins, and stores an unsigned PSBT that pays
semi-cold up to ``semicold_refill_to_sat`` (change back to the cold wallet's internal chain)
as a ``refill`` batch in ``cosigning``, with the coins reserved. It raises a review item
naming the batch and the commands of the ceremony (``docs/custody.md``): ``satvault cold
export`` on the online machine, ``satvault cold sign`` on each cosigner's offline machine (or
any BIP174 wallet), ``satvault cold import`` back online.

:func:`accept_signed` is where the imported, finalized transaction comes in: it must be the
very transaction that was asked for (same unsigned txid: same inputs, same outputs, same
amounts), and then the batch is ``signed`` and the payout job broadcasts, tracks and books
it like any other move (``cold_wallet → hot_wallet + network_fees``). At most one refill is
live at a time (a unique index), so a slow ceremony never stacks requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from embit.psbt import PSBT
from embit.transaction import Transaction
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.backends.errors import BackendUnavailable
from satvault.custody.cold import (
    ColdInput,
    ColdOutput,
    ColdWallet,
    KeyOrigin,
    inputs_without_prev_tx,
    make_cold_psbt,
)
from satvault.custody.planning import MovePlanner, semicold_coming_sat, semicold_sat
from satvault.db import utcnow
from satvault.kernel.errors import InvalidInput, NotFound
from satvault.logs import get_logger
from satvault.onchain.models import (
    CreditState,
    OnchainAddress,
    OnchainPayment,
    OnchainPaymentStatus,
    OnchainWallet,
    ReviewItem,
)
from satvault.onchain.service import allocate_address
from satvault.payouts.errors import PrevTxUnavailable
from satvault.payouts.job import CHANGE_DUST_SAT, store_batch
from satvault.payouts.models import (
    LIVE_STATUSES,
    BatchStatus,
    MoveKind,
    PayoutBatch,
    PayoutInput,
    PayoutTx,
)
from satvault.payouts.prevtxs import PrevTxs, planned_with_prev_txs
from satvault.signing.paths import CHANGE_CHAIN
from satvault.signing.psbt import AccountKey

__all__ = ["RefillDecision", "RefillPlanner", "accept_signed", "refill_vsize"]

log = get_logger(__name__)
MSAT = 1000


def refill_vsize(n_inputs: int, m: int, n: int, *, change: bool) -> int:
    """A P2WSH m-of-n spend: per input 41 vB plus a witness of m 73-byte signatures, the
    witness script (n 34-byte keys + 3) and their length bytes, a quarter each; outputs: one
    P2WPKH (31 vB) and, with change, one P2WSH (43 vB); 11 vB of overhead."""
    witness = 1 + 1 + m * 74 + 3 + (n * 34 + 3)
    return 11 + n_inputs * (41 + -(-witness // 4)) + 31 + (43 if change else 0)


@dataclass(frozen=True, slots=True)
class RefillDecision:
    batch_id: str | None
    reason: str
    amount_sat: int = 0
    fee_sat: int = 0


class RefillPlanner(MovePlanner):
    async def step(self) -> RefillDecision:
        s = self.settings
        if not s.cold_descriptor:
            return RefillDecision(None, "no cold wallet is configured")
        await self._add_prev_txs()
        feerate = await self.payouts.feerate()
        async with self.sessions() as session:
            accounts = await self.payouts.account_keys(session)
        try:
            return await planned_with_prev_txs(
                self.sessions, self.backend, lambda session, prev: self._plan(
                    session, feerate=feerate, hot=accounts["hot"], prev=prev))
        except IntegrityError:
            return RefillDecision(None, "a refill is already waiting for the cosigners")
        except (PrevTxUnavailable, BackendUnavailable) as exc:
            return RefillDecision(None, f"the cold coins' previous transactions: {exc}")

    async def _add_prev_txs(self) -> None:
        """A refill stored by an earlier satvault, whose PSBT did not carry each input's
        previous transaction, and still waiting for the cosigners, gets them (the cosigners
        refuse an input without; the transaction is unchanged). Read and fetched with no
        transaction open; stored in a short one, unless the refill moved on meanwhile."""
        async with self.sessions() as session:
            rows = (await session.execute(select(
                PayoutBatch.id, PayoutBatch.psbt, PayoutBatch.partial_psbt).where(
                    PayoutBatch.kind == MoveKind.REFILL,
                    PayoutBatch.status == BatchStatus.COSIGNING))).all()
        prev = PrevTxs(self.sessions, self.backend)
        for batch_id, psbt, partial in rows:
            if not inputs_without_prev_tx(psbt) and not (
                    partial and inputs_without_prev_tx(partial)):
                continue
            try:
                full = await prev.complete(psbt)
                full_partial = await prev.complete(partial) if partial else partial
            except (PrevTxUnavailable, BackendUnavailable) as exc:
                log.warning("refill_prev_txs_unavailable", batch=batch_id, error=str(exc))
                continue
            async with self.sessions() as session, session.begin():
                batch = await session.get(PayoutBatch, batch_id, with_for_update=True)
                if batch is None or batch.status is not BatchStatus.COSIGNING \
                        or (batch.psbt, batch.partial_psbt) != (psbt, partial):
                    continue  # signed, imported or given up meanwhile: the next pass sees
                batch.psbt, batch.partial_psbt = full, full_partial
                batch.updated_at = utcnow()
            log.info("refill_prev_txs_added", batch=batch_id)

    async def _plan(self, session: AsyncSession, *, feerate: int, hot: AccountKey,
                    prev: PrevTxs) -> RefillDecision:
        s = self.settings
        live = (await session.execute(select(PayoutBatch.id).where(
            PayoutBatch.kind == MoveKind.REFILL, PayoutBatch.status.in_(LIVE_STATUSES)))
        ).scalar_one_or_none()
        if live is not None:
            return RefillDecision(None, f"refill {live} is in progress")
        # What sweeps in flight bring counts as there: a refill beside them would carry
        # semi-cold past its target, and past its ceiling.
        semicold = await semicold_sat(session) + await semicold_coming_sat(session)
        if semicold >= s.semicold_floor_sat:
            return RefillDecision(None, f"semi-cold holds {semicold} sat, not under its floor "
                                        f"of {s.semicold_floor_sat}")
        # Never past the ceiling, whatever the target (Settings keeps it under).
        want = min(s.semicold_refill_to_sat, s.semicold_ceiling_sat) - semicold
        if want <= 0:
            return RefillDecision(None, f"semi-cold holds {semicold} sat, at its refill target "
                                        f"of {s.semicold_refill_to_sat}")
        wallet_row = (await session.execute(select(OnchainWallet).where(
            OnchainWallet.role == "cold"))).scalar_one()
        cold = ColdWallet.from_descriptor(wallet_row.descriptor, s.network)
        booked = select(PayoutBatch.txid).where(PayoutBatch.status == BatchStatus.CONFIRMED,
                                                PayoutBatch.txid.is_not(None))
        coins = (await session.execute(
            select(OnchainPayment, OnchainAddress)
            .join(OnchainAddress, OnchainAddress.id == OnchainPayment.address_id)
            .where(OnchainAddress.wallet_id == wallet_row.id,
                   OnchainPayment.status == OnchainPaymentStatus.CONFIRMED,
                   OnchainPayment.spent_by.is_(None),
                   OnchainPayment.id.not_in(select(PayoutInput.payment_id)),
                   OnchainPayment.mature(),
                   (OnchainPayment.credit_state == CreditState.CREDITED)
                   | OnchainPayment.txid.in_(booked))
            .order_by(OnchainPayment.value_sat.desc(), OnchainPayment.id))).all()
        chosen: list[tuple[OnchainPayment, OnchainAddress]] = []
        total = fee = 0
        for coin in coins:
            chosen.append(coin)
            total += coin[0].value_sat
            fee = refill_vsize(len(chosen), cold.threshold, cold.n, change=True) * feerate
            if total >= want + fee:
                break
        if not chosen or total - fee < CHANGE_DUST_SAT:
            log.warning("refill_cold_empty", semicold_sat=semicold, want_sat=want)
            return RefillDecision(None, f"semi-cold is under its floor ({semicold} sat) but the "
                                        "cold wallet has no confirmed coins to refill it with")
        prev.require(p.txid for p, _ in chosen)  # before any write: fetched outside
        amount = min(want, total - fee)
        change = total - amount - fee
        if change < CHANGE_DUST_SAT:  # no change output: a little more goes to semi-cold
            fee = refill_vsize(len(chosen), cold.threshold, cold.n, change=False) * feerate
            amount, change = total - fee, 0

        to_hot = await allocate_address(session, role="hot", owner_type="platform",
                                        owner_id="semicold", purpose="refill", request_id=None,
                                        change=True)
        hot_key = KeyOrigin(hot.pubkey(CHANGE_CHAIN, to_hot.index), hot.fingerprint,
                            (*hot.path, CHANGE_CHAIN, to_hot.index))
        outputs = [ColdOutput(to_hot.script_pubkey, amount, None, (hot_key,))]
        change_id = None
        if change:
            back = await allocate_address(session, role="cold", owner_type="platform",
                                          owner_id="cold", purpose="refill", request_id=None,
                                          change=True)
            outputs.append(ColdOutput(back.script_pubkey, change, back.index))
            change_id = back.address_id
        psbt = make_cold_psbt(
            [ColdInput(p.txid, p.vout, p.value_sat, a.chain, a.idx, bytes.fromhex(p.script_pubkey),
                       prev.get(p.txid))
             for p, a in chosen], outputs, wallet=cold, network=s.network)
        batch = await store_batch(session, MoveKind.REFILL, psbt=psbt, feerate=feerate,
                                  fee=fee, change_address_id=change_id,
                                  coin_ids=[p.id for p, _ in chosen])
        session.add(ReviewItem(
            kind="refill_needs_cosigners", subject=batch.id, created_at=batch.created_at,
            details=json.dumps({
                "amount_sat": amount, "fee_sat": fee, "semicold_sat": semicold,
                "floor_sat": s.semicold_floor_sat, "signatures_needed": cold.threshold,
                "next": f"satvault cold export {batch.id} --out DIR; sign offline with "
                        f"{cold.threshold} of the {cold.n} cosigners; satvault cold import "
                        "FILE…"})))
        await session.flush()
        log.warning("refill_raised", batch=batch.id, amount_sat=amount, fee_sat=fee,
                    semicold_sat=semicold, floor_sat=s.semicold_floor_sat,
                    signatures_needed=cold.threshold)
        return RefillDecision(batch.id, "raised for the cold cosigners", amount, fee)


def _unsigned_txid(tx: Transaction) -> str:
    return bytes(tx.txid()).hex()  # segwit: the txid does not cover the witnesses


async def accept_signed(session: AsyncSession, batch_id: str, raw_hex: str, txid: str,
                        psbt_b64: str) -> bool:
    """Take the cosigners' finalized refill. Returns False if it was already taken (the same
    transaction); raises :class:`InvalidInput` if it is not the transaction that was asked for
    or the batch is not waiting for it."""
    batch = await session.get(PayoutBatch, batch_id, with_for_update=True)
    if batch is None or batch.kind is not MoveKind.REFILL:
        raise NotFound(f"no refill {batch_id!r}")
    asked = _unsigned_txid(PSBT.from_string(batch.psbt).tx)
    try:
        got = Transaction.parse(bytes.fromhex(raw_hex))
    except Exception as exc:  # embit raises assorted errors on malformed input
        raise InvalidInput(f"not a readable transaction: {exc}") from exc
    if _unsigned_txid(got) != asked or txid != asked:
        raise InvalidInput(f"the signed transaction {txid} is not refill {batch_id}'s "
                           f"transaction {asked}: its inputs or outputs differ")
    if batch.status is not BatchStatus.COSIGNING:
        if batch.txid == asked:
            return False
        raise InvalidInput(f"refill {batch_id} is {batch.status}, not waiting for signatures")
    now = utcnow()
    session.add(PayoutTx(batch_id=batch_id, txid=asked, raw_tx=raw_hex, psbt=psbt_b64,
                         fee_sat=batch.fee_sat, created_at=now))
    batch.status, batch.txid, batch.updated_at = BatchStatus.SIGNED, asked, now
    await session.execute(update(ReviewItem).where(
        ReviewItem.kind == "refill_needs_cosigners", ReviewItem.subject == batch_id,
        ReviewItem.resolved_at.is_(None)).values(
            resolved_at=now, resolved_by="system",
            resolution=f"the signed refill {asked} was accepted"))
    log.info("refill_signed", batch=batch_id, txid=asked)
    return True
