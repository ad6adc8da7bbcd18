"""The payout job: batches pending withdrawals into one transaction and sees it confirmed.

A batch moves ``signing → signed → broadcast → confirmed``, and every state is committed
before the next external call, so a crash anywhere resumes where it stopped:

* ``signing``: the unsigned PSBT (inputs and outputs fixed) is stored. After a crash it is
  signed again; segwit txids do not depend on signatures, so the txid cannot change.
* ``signed``: the raw transaction is stored, then broadcast. A broadcast that times out is
  UNKNOWN, not failed: the same bytes are broadcast again later (the node answers with the
  txid, or "already in chain").
* ``broadcast``: confirmations are tracked over every version (fee bumps) of the batch; once
  one has enough, the withdrawals' holds are posted with each one's share of the fee.
* ``confirmed``: still watched until ``payout_final_confirmations`` deep; a reorg that takes
  it out of the chain has it broadcast again, never booked again (:mod:`.reorgs`).

A rejected broadcast abandons the batch (its withdrawals return to the queue with their holds
intact) only when it is provably harmless: no version of the transaction is known to the node
and every input is still unspent. If an input was spent by anything else, the batch is
``stuck`` and flagged for a person. Holds are never released by this job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from embit.psbt import PSBT
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.audit import anchors
from satvault.backends.base import ChainBackend, TxIndexSource
from satvault.backends.errors import (
    BackendError,
    BackendUnavailable,
    TxAlreadyInChain,
    TxRejected,
)
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.ids import new_id
from satvault.kernel.retrying import retrying
from satvault.ledger.platform import ensure_platform_accounts
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
from satvault.payouts.errors import CannotBumpFee, PrevTxUnavailable
from satvault.payouts.events import emit_withdrawal
from satvault.payouts.models import (
    BatchStatus,
    MoveKind,
    PayoutBatch,
    PayoutInput,
    PayoutTx,
    Withdrawal,
    WithdrawalMethod,
    WithdrawalStatus,
)
from satvault.payouts.moves import book_move
from satvault.payouts.prevtxs import PrevTxs, planned_with_prev_txs
from satvault.payouts.reorgs import ReorgWatch, batch_coins, missing_inputs
from satvault.payouts.service import free_to_leave
from satvault.payouts.settle import (
    batch_withdrawals,
    book_payout,
    give_up,
    give_up_at_signer,
    split_fee,
)
from satvault.signing.base import Payment, Signer
from satvault.signing.errors import (
    LimitExceeded,
    SignerUnavailable,
    SigningRefused,
)
from satvault.signing.psbt import (
    AccountKey,
    PsbtInput,
    PsbtOutput,
    accounts_from_descriptors,
    make_psbt,
)
from satvault.telemetry import PAYMENT_SECONDS, PAYMENTS, SIGNER_REFUSALS

__all__ = ["PayoutJob", "PayoutPlan", "PayoutReport", "estimate_vsize", "plan_payout",
           "split_fee", "store_batch"]

log = get_logger(__name__)

CHANGE_DUST_SAT = 294
_CHANGE_SPK = b"\x00" * 22  # a P2WPKH change output, for its size


def _counted(outcome: str, withdrawals: int) -> None:
    """The on-chain rail's payment metric: one per withdrawal of the batch, after commit."""
    if withdrawals:
        PAYMENTS.labels("onchain", outcome).inc(withdrawals)


def _output_vbytes(script: bytes) -> int:
    """An output's exact size: its 8-byte value, the script's length (a compact size) and
    the script (P2WPKH 31, P2WSH and P2TR 43, a future witness version up to 51, the audit
    anchor's OP_RETURN). A size by script type sized a 40-byte witness program's output 8 vB
    short, and at the floor feerate the batch paid less than the relay minimum: every pass
    rebuilt it, no withdrawal batched with it was paid (found from outside)."""
    return 8 + (1 if len(script) < 0xFD else 3) + len(script)


P2WPKH_INPUT_VBYTES = 68  # an input of ours, with its witness


def estimate_vsize(n_inputs: int, output_scripts: list[bytes]) -> int:
    """P2WPKH inputs (68 vB each with witness), outputs by script type, 11 vB overhead."""
    return 11 + P2WPKH_INPUT_VBYTES * n_inputs + sum(_output_vbytes(s) for s in output_scripts)


@dataclass(frozen=True, slots=True)
class PayoutPlan:
    """One payout as :func:`plan_payout` sized it: the pending withdrawals it pays (their
    positions, oldest first), how many of the spendable coins it spends (the first ones), what
    it pays them, its fee and its change (0: no change output, the dust went to the fee).
    ``funded`` false: the coins cannot pay these withdrawals."""

    withdrawals: tuple[int, ...]
    coins: int
    paid_sat: int
    fee_sat: int
    change_sat: int
    funded: bool = True


def _funded(chosen: tuple[int, ...], amounts: Sequence[int], scripts: Sequence[bytes],
            coins: Sequence[int], feerate: int) -> PayoutPlan:
    """The first coins that pay the ``chosen`` withdrawals and their fee, with a change."""
    paid = sum(amounts[i] for i in chosen)
    outputs = [*(scripts[i] for i in chosen), _CHANGE_SPK]
    k = have = fee = 0
    for value in coins:
        k, have = k + 1, have + value
        fee = estimate_vsize(k, outputs) * feerate
        if have >= paid + fee:
            break
    if have < paid + fee:
        return PayoutPlan(chosen, k, paid, fee, 0, funded=False)
    change = have - paid - fee
    if change < CHANGE_DUST_SAT:
        fee, change = fee + change, 0
    return PayoutPlan(chosen, k, paid, fee, change)


def plan_payout(amounts: Sequence[int], scripts: Sequence[bytes], coins: Sequence[int], *,
                feerate: int, cap_sat: int) -> PayoutPlan:
    """The next payout of the pending withdrawals (``amounts`` in sat, paid to ``scripts``,
    oldest first) at ``feerate``, spending the first of ``coins`` (values in sat, in the
    order they are spent) that pay it. Pure.

    It must fit the signer's per-transaction cap, which counts what leaves the platform: the
    payments and the fee this transaction carries (the change stays ours). Sized with the fee
    reserve instead, a batch was refused by the signer whenever the market fee passed the
    reserve, and its PSBT, the fee fixed in it, was refused again at every step for ever.
    Oldest first, a withdrawal joins if the batch still fits with it; one that does not waits
    for a later batch, and one that fits with no other (at the per-withdrawal ceiling, when
    fees are high) waits, with no batch stored, for fees to fall, while younger ones go
    before it. No withdrawals: nothing fits now. ``funded`` false: the coins cannot pay
    the withdrawals taken so far with the next one; as before, none is paid then."""
    plan = PayoutPlan((), 0, 0, 0, 0)
    for i, amount in enumerate(amounts):
        if plan.paid_sat + amount > cap_sat:  # the fee is never negative
            continue
        trial = _funded((*plan.withdrawals, i), amounts, scripts, coins, feerate)
        if not trial.funded:
            return trial
        if trial.paid_sat + trial.fee_sat <= cap_sat:
            plan = trial
    return plan


_ID_PREFIX = {MoveKind.PAYOUT: "pob", MoveKind.SWEEP: "swp", MoveKind.REFILL: "rfl"}


async def store_batch(session: AsyncSession, kind: MoveKind, *, psbt: str, feerate: int,
                      fee: int, change_address_id: int | None, coin_ids: Sequence[int]
                      ) -> PayoutBatch:
    """Store a planned move with its unsigned PSBT and reserve its coins (one live batch per
    coin: ``payout_inputs.payment_id`` is unique). A refill waits for the cold cosigners
    (``cosigning``); the others for the hot signer (``signing``)."""
    now = utcnow()
    batch = PayoutBatch(id=new_id(_ID_PREFIX[kind]), kind=kind,
                        status=BatchStatus.COSIGNING if kind is MoveKind.REFILL
                        else BatchStatus.SIGNING,
                        psbt=psbt, txid=None, feerate_sat_vb=feerate, fee_sat=fee,
                        change_address_id=change_address_id, broadcast_attempts=0,
                        created_at=now, updated_at=now)
    session.add(batch)
    await session.flush()
    session.add_all([PayoutInput(batch_id=batch.id, payment_id=pid) for pid in coin_ids])
    await session.flush()
    return batch


@dataclass
class PayoutReport:
    batched: int = 0
    signed: int = 0
    broadcast: int = 0
    confirmed: int = 0
    abandoned: int = 0
    stuck: int = 0
    # Signing attempts the signer's own caps refused (LimitExceeded): the batch stays in
    # `signing` and is asked again at each pass.
    signer_limited: int = 0
    # Payouts a node accepted once whose rebroadcast is refused: kept, never paid again.
    held: int = 0
    # Confirmed moves a reorg took out of the chain: broadcast again, a payout booked again
    # to its own other version that confirmed instead, or (an input spent elsewhere) told to
    # a person. Never unbooked.
    rebroadcast: int = 0
    reorged_conflicts: int = 0
    rebooked: int = 0  # payouts booked again to their other version that confirmed instead
    waiting_for_funds: bool = False
    # Pending withdrawals none of which fits the signer's per-transaction cap with the fee
    # the market asks now: no batch is stored, they are batched once fees fall.
    waiting_for_fees: bool = False
    errors: list[str] = field(default_factory=list)


class PayoutJob:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: ChainBackend,
                 signer: Signer, settings: Settings) -> None:
        self.sessions = sessions
        self.backend = backend
        self.signer = signer
        self.settings = settings
        self._accounts: dict[str, AccountKey] | None = None
        self._txindex_asked = False

    async def account_keys(self, session: AsyncSession) -> dict[str, AccountKey]:
        """The signer's deposit and hot account keys (fingerprint, path, xpub), read once from
        the registered watch-only wallets: what an unsigned PSBT names for the signer."""
        if self._accounts is None:
            rows = (await session.execute(select(OnchainWallet))).scalars().all()
            descs = {w.role: w.descriptor for w in rows}
            self._accounts = accounts_from_descriptors(descs, self.settings.network)
        return self._accounts

    async def step(self) -> PayoutReport:
        """Move every open payout forward, batch what is pending, move the new one too."""
        report = PayoutReport()
        await self._tell_without_txindex()
        await self.watch(report)
        await self.advance(report)
        await self.create_batch(report)
        await self.advance(report)
        return report

    async def _tell_without_txindex(self) -> None:
        """Once per process (asked again while the node cannot be reached): a node without a
        transaction index never shows a confirmed payout by its txid, so none would ever be
        seen to confirm. Nothing here can fix that; the log says so, clearly, at start."""
        if self._txindex_asked or not isinstance(self.backend, TxIndexSource):
            return
        try:
            index = await self.backend.tx_index()
        except BackendUnavailable:
            return
        except BackendError:  # an answer it cannot read: the doctor says more, payouts go on
            index = None
        self._txindex_asked = True
        if index is not None and not index.enabled:
            log.warning("node_without_txindex", backend=self.backend.name,
                        action="start bitcoind with -txindex=1: until then no payout, sweep "
                               "or refill is seen to confirm and their withdrawals stay "
                               "unbooked (satvault doctor reports it too)")

    async def watch(self, report: PayoutReport | None = None) -> PayoutReport:
        """Look at every confirmed move not yet final for a reorg (:mod:`.reorgs`)."""
        report = report or PayoutReport()
        watched = await ReorgWatch(self.sessions, self.backend,
                                   self.settings.payout_final_confirmations,
                                   self._tell_once).step()
        report.rebroadcast += watched.rebroadcast
        report.reorged_conflicts += watched.conflicts
        report.rebooked += watched.rebooked
        report.errors += watched.errors
        return report

    # ----------------------------------------------------------------------- batching
    async def feerate(self) -> int:
        """The node's fee estimate for ``fee_target_blocks``, within the configured bounds
        (the lower bound when the node cannot say)."""
        s = self.settings
        try:
            rate = await self.backend.feerate_sat_vb(s.fee_target_blocks)
        except BackendUnavailable:
            rate = None
        return min(max(rate or s.min_feerate_sat_vb, s.min_feerate_sat_vb), s.max_feerate_sat_vb)

    async def _spendable(self, session: AsyncSession) -> list[tuple[OnchainPayment,
                                                                    OnchainAddress, str]]:
        """Confirmed, unreserved coins of the semi-cold (``hot``) wallet whose value is on its
        ledger account: a payout's change, direct funding once credited, or the output of a
        sweep or refill once that move is booked. Deposit coins are never spent here: they
        reach this wallet through a sweep (the signer refuses anything else too). A coinbase
        coin waits for its maturity."""
        reserved = select(PayoutInput.payment_id)
        booked_moves = select(PayoutBatch.txid).where(PayoutBatch.status == BatchStatus.CONFIRMED,
                                                      PayoutBatch.txid.is_not(None))
        rows = (await session.execute(
            select(OnchainPayment, OnchainAddress, OnchainWallet.role)
            .join(OnchainAddress, OnchainAddress.id == OnchainPayment.address_id)
            .join(OnchainWallet, OnchainWallet.id == OnchainAddress.wallet_id)
            .where(OnchainWallet.role == "hot",
                   OnchainPayment.status == OnchainPaymentStatus.CONFIRMED,
                   OnchainPayment.spent_by.is_(None), OnchainPayment.id.not_in(reserved),
                   OnchainPayment.mature(),
                   (OnchainPayment.credit_state == CreditState.CREDITED)
                   | (OnchainAddress.purpose == "change")
                   | OnchainPayment.txid.in_(booked_moves))
            .order_by(OnchainPayment.value_sat.desc(), OnchainPayment.id)
        )).all()
        return [(p, a, role) for p, a, role in rows]

    async def create_batch(self, report: PayoutReport | None = None) -> int:
        """Batch pending withdrawals into one unsigned payout (stored, not yet signed), sized
        to the signer's per-transaction cap with the fee it carries (:func:`plan_payout`)."""
        report = report or PayoutReport()
        feerate = await self.feerate()

        async def work(session: AsyncSession, prev: PrevTxs) -> int:
            s = self.settings
            # A wallet frozen after its withdrawal was queued, or whose owner's tier was
            # lowered below its amount since: it waits, held (free_to_leave).
            pending = (await session.execute(
                select(Withdrawal).where(Withdrawal.status == WithdrawalStatus.PENDING,
                                         Withdrawal.method == WithdrawalMethod.ONCHAIN,
                                         free_to_leave(s))
                .order_by(Withdrawal.created_at, Withdrawal.id).limit(s.payout_max_batch)
                .with_for_update(skip_locked=True))).scalars().all()
            if not pending:
                return 0
            pay_scripts = [bytes.fromhex(w.script_pubkey or "") for w in pending]
            spendable = await self._spendable(session)
            plan = plan_payout([w.amount_msat // 1000 for w in pending], pay_scripts,
                               [p.value_sat for p, _, _ in spendable], feerate=feerate,
                               cap_sat=s.signer_max_tx_sat)
            if not plan.withdrawals:
                report.waiting_for_fees = True
                log.info("payouts_waiting_for_fees", pending=len(pending), feerate=feerate,
                         cap_sat=s.signer_max_tx_sat)
                return 0
            pending = [pending[i] for i in plan.withdrawals]
            pay_scripts = [pay_scripts[i] for i in plan.withdrawals]
            # What the platform would pay beyond the reserves held (found from outside: at
            # 500 sat/vB a 1,000 sat withdrawal went alone with 65,500 sat of it): above the
            # setting, the batch waits for lower fees.
            excess = plan.fee_sat - sum(w.fee_reserve_msat // 1000 for w in pending)
            if excess > s.payout_max_fee_excess_sat:
                report.waiting_for_fees = True
                log.warning("payouts_waiting_for_fees", pending=len(pending), feerate=feerate,
                            fee_sat=plan.fee_sat, above_reserves_sat=excess,
                            max_excess_sat=s.payout_max_fee_excess_sat)
                return 0
            chosen = spendable[:plan.coins]
            if not plan.funded:
                report.waiting_for_funds = True
                log.warning("payouts_waiting_for_funds", pending=len(pending),
                            need_sat=plan.paid_sat + plan.fee_sat,
                            have_sat=sum(p.value_sat for p, _, _ in chosen))
                return 0
            prev.require(p.txid for p, _, _ in chosen)  # before any write: fetched outside
            accounts = await self.account_keys(session)
            # The fee follows the market; users never pay beyond their reserve and the
            # platform covers any excess at confirmation (see _confirm).
            fee, change = plan.fee_sat, plan.change_sat
            outputs = [PsbtOutput(spk, w.amount_msat // 1000)
                       for spk, w in zip(pay_scripts, pending, strict=True)]
            change_address_id = None
            if change:
                alloc = await allocate_address(session, role="hot", owner_type="platform",
                                               owner_id="hot", purpose="change",
                                               request_id=None, change=True)
                outputs.append(PsbtOutput(alloc.script_pubkey, change, alloc.index))
                change_address_id = alloc.address_id
            inputs = [PsbtInput(p.txid, p.vout, p.value_sat, bytes.fromhex(p.script_pubkey),
                                role, a.chain, a.idx, prev.get(p.txid)) for p, a, role in chosen]
            psbt = make_psbt(inputs, outputs, network=s.network, fingerprint_and_paths=accounts)
            batch = await store_batch(session, MoveKind.PAYOUT, psbt=psbt, feerate=feerate,
                                      fee=fee, change_address_id=change_address_id,
                                      coin_ids=[p.id for p, _, _ in chosen])
            now = batch.created_at
            for w in pending:
                w.status, w.batch_id, w.updated_at = WithdrawalStatus.BATCHED, batch.id, now
            log.info("payout_batched", batch=batch.id, withdrawals=len(pending),
                     inputs=len(chosen), fee_sat=fee, feerate=feerate)
            return len(pending)

        try:
            batched = await planned_with_prev_txs(self.sessions, self.backend, work)
        except (PrevTxUnavailable, BackendUnavailable) as exc:
            report.errors.append(f"batching: {exc}")
            log.warning("payout_batch_waits_for_prev_txs", error=str(exc))
            return 0
        report.batched += batched
        return batched

    # ---------------------------------------------------------------------- advancing
    async def advance(self, report: PayoutReport | None = None) -> PayoutReport:
        """Sign, broadcast and track every open payout as far as it goes now."""
        report = report or PayoutReport()
        async with self.sessions() as s:
            open_batches = (await s.execute(
                select(PayoutBatch.id, PayoutBatch.status)
                .where(PayoutBatch.status.in_((BatchStatus.SIGNING, BatchStatus.SIGNED,
                                               BatchStatus.BROADCAST)))
                .order_by(PayoutBatch.created_at))).all()
        for batch_id, status in open_batches:
            try:
                if status == BatchStatus.SIGNING:
                    await self._sign(batch_id, report)
                    status = await self._status(batch_id)
                if status == BatchStatus.SIGNED:
                    await self._broadcast(batch_id, report)
                    status = await self._status(batch_id)
                if status == BatchStatus.BROADCAST:
                    await self._track(batch_id, report)
            except (BackendUnavailable, SignerUnavailable) as exc:
                report.errors.append(f"{batch_id}: {exc}")
                log.warning("payout_unknown_retry_later", batch=batch_id, error=str(exc))
        return report

    async def _status(self, batch_id: str) -> BatchStatus:
        async with self.sessions() as s:
            batch = await s.get(PayoutBatch, batch_id)
            assert batch is not None
            return batch.status

    async def _payments(self, session: AsyncSession, batch_id: str) -> list[Withdrawal]:
        return await batch_withdrawals(session, batch_id)

    async def _sign(self, batch_id: str, report: PayoutReport, psbt: str | None = None,
                    *, replacement: bool = False) -> None:
        async with self.sessions() as s:
            batch = await s.get(PayoutBatch, batch_id)
            assert batch is not None
            wds = await self._payments(s, batch_id)
            psbt = psbt or batch.psbt
        # A batch stored before PSBTs carried each input's previous transaction gets them
        # now (the signer refuses an input without); the transaction itself is unchanged.
        try:
            psbt = await PrevTxs(self.sessions, self.backend).complete(psbt)
        except PrevTxUnavailable as exc:
            report.errors.append(f"{batch_id}: {exc}")
            log.warning("payout_sign_waits_for_prev_txs", batch=batch_id, error=str(exc))
            return
        payments = [Payment(bytes.fromhex(w.script_pubkey or ""), w.amount_msat // 1000, w.id)
                    for w in wds]
        max_fee = self.settings.max_feerate_sat_vb * estimate_vsize(50, [b"\0" * 34] * 101)
        try:
            signed = await self.signer.sign_payout(
                psbt, payments, max_fee_sat=max_fee,
                max_feerate_sat_vb=self.settings.max_feerate_sat_vb)
        except SigningRefused as refused:
            SIGNER_REFUSALS.labels(type(refused).__name__).inc()
            if replacement:  # the live version is untouched: refuse the bump, keep tracking
                raise CannotBumpFee(f"the signer refused the replacement: {refused}") \
                    from refused
            why = str(refused)
            if isinstance(refused, LimitExceeded):
                # Not the batch's fault: the signer's caps are reached. It stays in `signing`
                # and is asked again at every step (the 24-hour window rolls on); a person is
                # told once per batch.
                await retrying(self.sessions, partial(
                    self._tell_once, batch_id=batch_id, kind="signer_limit", why=why))
                report.signer_limited += 1
                log.warning("payout_signer_limit", batch=batch_id, reason=why)
                return
            _counted("stuck", await retrying(self.sessions,
                                             partial(self._mark_stuck, batch_id=batch_id,
                                                     why=why)))
            report.stuck += 1
            return

        async def store(session: AsyncSession) -> None:
            batch = await session.get(PayoutBatch, batch_id, with_for_update=True)
            assert batch is not None
            known = (await session.execute(select(PayoutTx.id).where(
                PayoutTx.txid == signed.txid))).scalar_one_or_none()
            if known is None:
                session.add(PayoutTx(batch_id=batch_id, txid=signed.txid, raw_tx=signed.raw_hex,
                                     psbt=psbt or "", fee_sat=signed.fee_sat,
                                     created_at=utcnow()))
            batch.txid, batch.fee_sat, batch.status = \
                signed.txid, signed.fee_sat, BatchStatus.SIGNED
            batch.updated_at = utcnow()
            for w in await self._payments(session, batch_id):
                w.txid, w.updated_at = signed.txid, utcnow()

        await retrying(self.sessions, store)
        report.signed += 1
        log.info("payout_signed", batch=batch_id, txid=signed.txid, fee_sat=signed.fee_sat)

    async def _tell_once(self, session: AsyncSession, *, batch_id: str, kind: str, why: str,
                         status: BatchStatus | None = None) -> None:
        """Note ``why`` on the batch (and its ``status``, if given) and tell a person once
        per batch: one open review item of ``kind``."""
        b = await session.get(PayoutBatch, batch_id, with_for_update=True)
        assert b is not None
        b.last_error, b.updated_at = why, utcnow()
        if status is not None:
            b.status = status
        told = (await session.execute(select(ReviewItem.id).where(
            ReviewItem.kind == kind, ReviewItem.subject == batch_id,
            ReviewItem.resolved_at.is_(None)).limit(1))).scalar_one_or_none()
        if told is None:
            session.add(ReviewItem(kind=kind, subject=batch_id,
                                   details=json.dumps({"reason": why}), created_at=utcnow()))

    async def _mark_stuck(self, session: AsyncSession, *, batch_id: str, why: str) -> int:
        """Mark the batch stuck for a person; how many withdrawals it carries."""
        batch = await session.get(PayoutBatch, batch_id, with_for_update=True)
        assert batch is not None
        batch.status, batch.last_error, batch.updated_at = BatchStatus.STUCK, why, utcnow()
        session.add(ReviewItem(kind="payout_stuck", subject=batch_id,
                               details=json.dumps({"reason": why}), created_at=utcnow()))
        log.error("payout_stuck", batch=batch_id, reason=why)
        return len(await self._payments(session, batch_id))

    async def _versions(self, session: AsyncSession, batch_id: str) -> list[PayoutTx]:
        return list((await session.execute(select(PayoutTx).where(
            PayoutTx.batch_id == batch_id).order_by(PayoutTx.id))).scalars().all())

    async def _broadcast(self, batch_id: str, report: PayoutReport) -> None:
        async with self.sessions() as s:
            batch = await s.get(PayoutBatch, batch_id)
            assert batch is not None
            current = next(v for v in await self._versions(s, batch_id) if v.txid == batch.txid)
            raw = current.raw_tx
        height: int | None = None
        try:
            await self.backend.broadcast(raw)
        except TxAlreadyInChain:
            pass
        except TxRejected as exc:  # the node's own refusal: the one definite "not sent"
            await self._after_rejection(batch_id, exc, report)
            return
        except Exception as lost:
            # A timeout, a busy node, a gateway's error page instead of the node's answer, an
            # answer we cannot read: the node may have taken it (found from outside: only a
            # timeout and an HTTP 503 counted, so a payout whose answer was lost as an HTML
            # 502 was given up later and paid again). Unknown: noted as an attempt, never
            # given up, tracked and sent again at the next pass.
            why = f"broadcast outcome unknown: {type(lost).__name__}: {lost}"

            async def note(session: AsyncSession) -> int:
                b = await session.get(PayoutBatch, batch_id, with_for_update=True)
                assert b is not None
                b.broadcast_attempts += 1
                b.last_error, b.updated_at = why, utcnow()
                return len(await self._payments(session, batch_id))
            _counted("unknown", await retrying(self.sessions, note))
            if isinstance(lost, BackendUnavailable):
                raise
            raise BackendUnavailable(why) from lost
        else:
            try:
                height = (await self.backend.tip()).height
            except Exception as exc:  # accepted all the same: only the height is missing
                log.warning("payout_broadcast_height_unknown", batch=batch_id, error=str(exc))

        async def done(session: AsyncSession) -> int:
            b = await session.get(PayoutBatch, batch_id, with_for_update=True)
            assert b is not None
            b.status, b.broadcast_attempts, b.updated_at = \
                BatchStatus.BROADCAST, b.broadcast_attempts + 1, utcnow()
            if height is not None:
                b.broadcast_height = height
            sent = 0
            for w in await self._payments(session, batch_id):
                sent += w.status != WithdrawalStatus.BROADCAST  # not again on a rebroadcast
                w.status, w.updated_at = WithdrawalStatus.BROADCAST, utcnow()
                await emit_withdrawal(session, w, "broadcast")
            return sent

        _counted("broadcast", await retrying(self.sessions, done))
        report.broadcast += 1
        log.info("payout_broadcast", batch=batch_id)

    async def _after_rejection(self, batch_id: str, exc: TxRejected,
                               report: PayoutReport) -> None:
        """The node refused our transaction: find out whether that is harmless."""
        async with self.sessions() as s:
            batch = await s.get(PayoutBatch, batch_id)
            assert batch is not None
            sent_before = batch.kind is MoveKind.PAYOUT and batch.broadcast_attempts > 0
            versions = [v.txid for v in await self._versions(s, batch_id)]
            coins = await batch_coins(s, batch_id)
        for txid in versions:
            if await self.backend.transaction(txid) is not None:
                await retrying(self.sessions, lambda s: self._set_status(s, batch_id,
                                                                         BatchStatus.BROADCAST))
                return
        if sent_before:
            # A node accepted this payout once (or its answer was lost): it may sit in other
            # nodes' mempools and confirm whatever our node now says. Paying its withdrawals
            # again from other coins could pay them twice, so it is never given up here: it
            # stays tracked (sent again at every pass, booked if any version confirms) and a
            # person is told; a fee bump (`satvault payouts bump`) replaces it with a version
            # spending the same coins, which only one of the two can.
            why = (f"rebroadcast rejected ({exc.reason}); a node accepted this payout before, "
                   "so it may still confirm: it is kept, not paid again")
            await retrying(self.sessions, partial(
                self._tell_once, batch_id=batch_id, kind="payout_rejected", why=why,
                status=BatchStatus.BROADCAST))
            report.held += 1
            log.error("payout_rebroadcast_rejected", batch=batch_id, reason=exc.reason)
            return
        for txid, vout, spent_elsewhere in await missing_inputs(self.backend, coins):
            if not spent_elsewhere:
                # The coin itself is gone (a reorg took the deposit that made it): nothing of
                # ours spent it, so giving the batch up moves no money.
                log.warning("move_input_vanished", batch=batch_id, coin=f"{txid}:{vout}")
                continue
            why = (f"rejected ({exc.reason}) and input {txid}:{vout} is spent by a "
                   "transaction we do not know")
            _counted("stuck", await retrying(
                self.sessions, partial(self._mark_stuck, batch_id=batch_id, why=why)))
            report.stuck += 1
            return

        if batch.kind is MoveKind.PAYOUT:
            # A signer that cannot be reached raises: the batch is given up at the next pass.
            await give_up_at_signer(self.signer, versions, reason=f"rejected ({exc.reason}), "
                                    "never accepted by a node: its withdrawals are batched again")

        async def abandon(session: AsyncSession) -> int:
            return len(await give_up(session, batch_id=batch_id, versions=versions,
                                     error=str(exc)))

        _counted("retried", await retrying(self.sessions, abandon))
        report.abandoned += 1
        log.error("payout_abandoned_requeued", batch=batch_id, reason=exc.reason)

    async def _set_status(self, session: AsyncSession, batch_id: str, status: BatchStatus) -> None:
        b = await session.get(PayoutBatch, batch_id, with_for_update=True)
        assert b is not None
        b.status, b.updated_at = status, utcnow()

    async def _track(self, batch_id: str, report: PayoutReport) -> None:
        async with self.sessions() as s:
            versions = await self._versions(s, batch_id)
        seen = False
        for v in versions:
            st = await self.backend.transaction(v.txid)
            if st is None:
                continue
            seen = True
            if st.confirmations >= self.settings.payout_confirmations:
                final = st.confirmations >= self.settings.payout_final_confirmations
                paid, seconds = await retrying(self.sessions, partial(
                    self._confirm, batch_id=batch_id, version=v, height=st.block_height,
                    final=final))
                _counted("succeeded", paid)
                for _ in range(paid):
                    PAYMENT_SECONDS.labels("onchain").observe(seconds)
                report.confirmed += 1
                return
        if not seen:  # evicted or never relayed: broadcast the current version again
            await retrying(self.sessions,
                           lambda s: self._set_status(s, batch_id, BatchStatus.SIGNED))
            await self._broadcast(batch_id, report)
            return
        await self._maybe_bump(batch_id)

    async def _maybe_bump(self, batch_id: str) -> None:
        """Fee-bump policy: replace a payout left unconfirmed for too many blocks."""
        s = self.settings
        if s.payout_bump_after_blocks <= 0:
            return
        async with self.sessions() as session:
            batch = await session.get(PayoutBatch, batch_id)
            assert batch is not None
            since, feerate, fee = batch.broadcast_height, batch.feerate_sat_vb, batch.fee_sat
            reserves = int((await session.execute(  # what its withdrawals hold for the fee
                select(func.coalesce(func.sum(Withdrawal.fee_reserve_msat), 0))
                .where(Withdrawal.batch_id == batch_id))).scalar_one()) // 1000 \
                if batch.kind is MoveKind.PAYOUT else None
        if since is None:
            return
        tip = (await self.backend.tip()).height
        if tip - since < s.payout_bump_after_blocks:
            return
        new_rate = min(s.max_feerate_sat_vb, -(-feerate * (100 + s.payout_bump_percent) // 100))
        if reserves is not None and fee and feerate:
            # The platform's share stays within what a new batch may make it pay above the
            # reserves held (found from outside: +1000 % a block took a 1,000 sat withdrawal's
            # fee to 70,500 sat, 65,500 of them the platform's).
            vsize = max(1, fee // feerate)
            new_rate = min(new_rate, (reserves + s.payout_max_fee_excess_sat) // vsize)
        if new_rate <= feerate:
            if reserves is not None:
                log.info("payout_bump_at_limit", batch=batch_id, feerate=feerate, fee_sat=fee,
                         max_excess_sat=s.payout_max_fee_excess_sat)
            return
        try:
            await self.bump_fee(batch_id, new_rate)
        except CannotBumpFee as exc:
            log.warning("payout_bump_skipped", batch=batch_id, reason=str(exc))

    async def _confirm(self, session: AsyncSession, *, batch_id: str, version: PayoutTx,
                       height: int | None, final: bool = False) -> tuple[int, float]:
        """Book the confirmed move; the withdrawals it paid (0 for a sweep or refill, or if
        booked already) and the seconds since the batch was made. ``final``: it is already
        ``payout_final_confirmations`` deep, so it is not watched for a reorg."""
        batch = await session.get(PayoutBatch, batch_id, with_for_update=True)
        assert batch is not None
        if batch.status == BatchStatus.CONFIRMED:
            return 0, 0.0
        platform = await ensure_platform_accounts(session, "BTC")
        paid = 0
        if batch.kind is MoveKind.PAYOUT:
            paid = await book_payout(session, batch_id=batch_id, txid=version.txid,
                                     fee_sat=version.fee_sat, platform=platform)
        else:
            await book_move(session, batch, version, platform)
        if batch.kind is MoveKind.SWEEP and height is not None:
            # a sweep may carry the audit chain's head: its anchor now has a txid and a block
            await anchors.confirm(session, batch_id=batch_id, txid=version.txid, height=height)
        batch.status, batch.txid, batch.fee_sat = \
            BatchStatus.CONFIRMED, version.txid, version.fee_sat
        batch.confirmed_height, batch.updated_at = height, utcnow()
        if final:
            batch.final_at = batch.updated_at
        coins = (await session.execute(select(PayoutInput.payment_id).where(
            PayoutInput.batch_id == batch_id))).scalars().all()
        for pid in coins:
            coin = await session.get(OnchainPayment, pid)
            if coin is not None and coin.spent_by is None:
                coin.spent_by = version.txid
        log.info("move_confirmed", batch=batch_id, kind=batch.kind, txid=version.txid)
        return paid, max(0.0, (utcnow() - batch.created_at).total_seconds())

    # ----------------------------------------------------------------------- fee bumps
    def _replacement(self, original: str, wds: list[Withdrawal],
                     coins: Sequence[Any], change: OnchainAddress,
                     accounts: dict[str, AccountKey], old_fee: int, feerate_sat_vb: int,
                     prev: PrevTxs) -> str:
        """The PSBT of a higher-fee version: the same inputs and outputs, the fee taken from
        the change output (for a sweep, the output that absorbs its fee)."""
        tx = PSBT.from_string(original)
        scripts = [bytes(o.script_pubkey.data) for o in tx.tx.vout]
        vsize = estimate_vsize(len(coins), scripts)
        new_fee = vsize * feerate_sat_vb
        if new_fee <= old_fee:
            raise CannotBumpFee(f"a fee of {new_fee} sat does not exceed the current {old_fee}")
        spk = bytes.fromhex(change.script_pubkey)
        k = next((n for n, s in enumerate(scripts) if s == spk), None)
        if k is None:
            raise CannotBumpFee("the change output is not in the transaction")
        total_in = sum(p.value_sat for p, _, _ in coins)
        new_change = total_in - (sum(int(o.value) for o in tx.tx.vout) - tx.tx.vout[k].value) \
            - new_fee
        if new_change < CHANGE_DUST_SAT:
            raise CannotBumpFee("the change output cannot cover that fee")
        if not wds:  # a sweep: same outputs, one of them smaller
            tx.tx.vout[k].value = new_change
            tx.outputs[k].value = new_change
            return str(tx.to_base64())
        pay_scripts = [bytes.fromhex(w.script_pubkey or "") for w in wds]
        outputs = [PsbtOutput(spk, w.amount_msat // 1000)
                   for spk, w in zip(pay_scripts, wds, strict=True)]
        outputs.append(PsbtOutput(spk, new_change, change.idx))
        inputs = [PsbtInput(p.txid, p.vout, p.value_sat, bytes.fromhex(p.script_pubkey), role,
                            a.chain, a.idx, prev.get(p.txid)) for p, a, role in coins]
        return make_psbt(inputs, outputs, network=self.settings.network,
                         fingerprint_and_paths=accounts)

    async def bump_fee(self, batch_id: str, feerate_sat_vb: int) -> str:
        """Replace a payout by a higher-fee version paying the same withdrawals (RBF)."""
        async with self.sessions() as s:
            batch = await s.get(PayoutBatch, batch_id)
            if batch is None:
                raise CannotBumpFee(f"no payout {batch_id!r}")
            if batch.status not in (BatchStatus.SIGNED, BatchStatus.BROADCAST):
                raise CannotBumpFee(f"payout {batch_id} is {batch.status}; only an unconfirmed "
                                    "payout can be bumped")
            if batch.kind is MoveKind.REFILL:
                raise CannotBumpFee("a refill is signed by the cold cosigners: a higher fee "
                                    "needs a new refill, signed again")
            wds = await self._payments(s, batch_id)
            coins = (await s.execute(
                select(OnchainPayment, OnchainAddress, OnchainWallet.role)
                .join(PayoutInput, PayoutInput.payment_id == OnchainPayment.id)
                .join(OnchainAddress, OnchainAddress.id == OnchainPayment.address_id)
                .join(OnchainWallet, OnchainWallet.id == OnchainAddress.wallet_id)
                .where(PayoutInput.batch_id == batch_id).order_by(OnchainPayment.id))).all()
            change = await s.get(OnchainAddress, batch.change_address_id) \
                if batch.change_address_id else None
            accounts = await self.account_keys(s)
            old_fee = batch.fee_sat
            original = batch.psbt
        if change is None:
            raise CannotBumpFee("this payout has no change output to take a higher fee from")
        if feerate_sat_vb > self.settings.max_feerate_sat_vb:
            raise CannotBumpFee(f"{feerate_sat_vb} sat/vB is above the configured maximum of "
                                f"{self.settings.max_feerate_sat_vb}")
        prev = PrevTxs(self.sessions, self.backend)
        try:  # a payout's replacement is built anew; a sweep's edits the stored PSBT
            if wds:
                await prev.fetch(p.txid for p, _, _ in coins)
        except PrevTxUnavailable as exc:
            raise CannotBumpFee(str(exc)) from exc
        psbt = self._replacement(original, wds, coins, change, accounts, old_fee,
                                 feerate_sat_vb, prev)
        report = PayoutReport()
        await self._sign(batch_id, report, psbt=psbt, replacement=True)
        await self._broadcast(batch_id, report)
        async with self.sessions() as s, s.begin():
            b = await s.get(PayoutBatch, batch_id, with_for_update=True)
            assert b is not None and b.txid is not None
            b.feerate_sat_vb = feerate_sat_vb
            log.info("payout_fee_bumped", batch=batch_id, txid=b.txid, feerate=feerate_sat_vb)
            return b.txid

