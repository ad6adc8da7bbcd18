"""Sweeps: confirmed deposit coins into the semi-cold and cold wallets.

Customers pay per-request deposit addresses; those coins sit on the ``deposit`` account of
the hot signer's seed until a sweep consolidates them. A sweep is one transaction spending up
to ``sweep_max_inputs`` confirmed, credited deposit coins into (at most) two outputs: one to
the semi-cold wallet (``hot``, on its internal chain, which pays withdrawals) and one to the
cold multisig. How the value is split (:func:`split_sweep`):

1. ``sweep_semicold_percent`` of it (default 40 %) to semi-cold,
2. but at least what brings semi-cold up to its floor,
3. and never more than keeps it under its ceiling: above it, everything goes cold.

A sweep waits for enough value (``sweep_min_sat``) unless its oldest coin has waited
``sweep_max_wait_blocks``; it never runs while the fee market is above
``sweep_max_feerate_sat_vb``, nor outside ``sweep_window_utc`` when one is set.

Planning is one short database transaction after the network calls (fee estimate, tip): it
reserves the coins (``payout_inputs``), allocates the two addresses and stores the unsigned
PSBT as a ``sweep`` batch in ``signing``. From there the payout job signs it (the hot signer
accepts it only because every output is one of the platform's own descriptors), broadcasts,
tracks, bumps (the cold output pays a higher fee) and, once confirmed, books it:
``deposit_wallet → hot_wallet + cold_wallet + network_fees`` (``payouts.moves``). At most one
sweep is live at a time (a unique index says so in the database).

A sweep may also carry the audit chain's head in one zero-value ``OP_RETURN`` output (the
``SVA1`` anchor of :mod:`satvault.signing.anchor`): a requested anchor, or with
``audit_anchor_in_sweeps`` the latest sealed head (:mod:`satvault.audit.anchors`). Its bytes
are counted in the fee estimate; it moves no money, so the booking is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.audit import anchors
from satvault.backends.errors import BackendUnavailable
from satvault.config import sweep_window
from satvault.custody.planning import MovePlanner, semicold_coming_sat, semicold_sat
from satvault.db import utcnow
from satvault.logs import get_logger
from satvault.onchain.models import (
    CreditState,
    OnchainAddress,
    OnchainPayment,
    OnchainPaymentStatus,
    OnchainWallet,
)
from satvault.onchain.service import allocate_address, get_watch_only
from satvault.payouts.errors import PrevTxUnavailable
from satvault.payouts.job import (
    CHANGE_DUST_SAT,
    P2WPKH_INPUT_VBYTES,
    estimate_vsize,
    store_batch,
)
from satvault.payouts.models import (
    LIVE_STATUSES,
    MoveKind,
    PayoutBatch,
    PayoutInput,
)
from satvault.payouts.prevtxs import PrevTxs, planned_with_prev_txs
from satvault.signing.anchor import anchor_script
from satvault.signing.psbt import (
    AccountKey,
    PsbtInput,
    PsbtOutput,
    make_psbt,
)

__all__ = ["SweepDecision", "SweepPlanner", "split_sweep"]

log = get_logger(__name__)
MSAT = 1000
T = TypeVar("T")
_P2WPKH_SPK = b"\x00" * 22
# The previous transactions a sweep's PSBT may carry, in bytes (each once per input: BIP174
# v0 repeats one shared by several coins). Deposits paid by large batched transactions could
# otherwise make the signer request pass its 8 MiB line (base64 adds a third).
PREV_TX_BUDGET = 4 * 1024 * 1024
_P2WSH_SPK = b"\x00" * 34


def split_sweep(net_sat: int, semicold_sat: int, *, percent: int, floor_sat: int,
                ceiling_sat: int, has_cold: bool) -> tuple[int, int]:
    """``(to semi-cold, to cold)`` for ``net_sat`` swept while semi-cold holds
    ``semicold_sat``. Pure; the parts add up to ``net_sat`` and neither is dust."""
    if net_sat <= 0:
        return 0, 0
    if not has_cold:
        return net_sat, 0
    semi = net_sat * percent // 100
    semi = max(semi, min(net_sat, floor_sat - semicold_sat))   # fill up to the floor first
    semi = max(0, min(semi, ceiling_sat - semicold_sat))        # never above the ceiling
    cold = net_sat - semi
    if 0 < semi < CHANGE_DUST_SAT:
        semi, cold = 0, net_sat
    if 0 < cold < CHANGE_DUST_SAT:
        semi, cold = net_sat, 0
    return semi, cold


@dataclass(frozen=True, slots=True)
class SweepDecision:
    """What one planning round did: ``batch_id`` when it stored a sweep, else why not."""

    batch_id: str | None
    reason: str
    inputs: int = 0
    to_semicold_sat: int = 0
    to_cold_sat: int = 0
    fee_sat: int = 0
    anchor_seq: int | None = None  # the audit chain row committed in its OP_RETURN


def in_window(window: str, now: datetime) -> bool:
    span = sweep_window(window)
    if span is None:
        return True
    start, end = span
    hour = now.astimezone(UTC).hour
    return start <= hour < end if start < end else (hour >= start or hour < end)


def within_psbt_budget(coins: Sequence[T], size: Callable[[T], int],
                       budget: int = PREV_TX_BUDGET) -> list[T]:
    """The first coins whose previous transactions fit in ``budget`` bytes (at least one:
    a single transaction is at most 4 MB of weight, far less without its witnesses)."""
    kept: list[T] = []
    used = 0
    for coin in coins:
        used += size(coin)
        if kept and used > budget:
            break
        kept.append(coin)
    return kept


class SweepPlanner(MovePlanner):
    async def step(self, *, now: datetime | None = None) -> SweepDecision:
        """Store one sweep if one is due; network first (fee estimate, tip), then one short
        transaction."""
        s = self.settings
        if not s.sweep_enabled:
            return SweepDecision(None, "sweeps are disabled")
        if not in_window(s.sweep_window_utc, now or utcnow()):
            return SweepDecision(None, f"outside the sweep window {s.sweep_window_utc} UTC")
        try:
            tip = (await self.backend.tip()).height
        except BackendUnavailable as exc:
            return SweepDecision(None, f"the node is unavailable: {exc}")
        feerate = await self.payouts.feerate()
        if feerate > s.sweep_max_feerate_sat_vb:
            log.info("sweep_waits_for_fees", feerate=feerate, cap=s.sweep_max_feerate_sat_vb)
            return SweepDecision(None, f"the fee market ({feerate} sat/vB) is above the sweep "
                                       f"cap of {s.sweep_max_feerate_sat_vb}")
        async with self.sessions() as session:
            accounts = await self.payouts.account_keys(session)
        try:
            return await planned_with_prev_txs(
                self.sessions, self.backend, lambda session, prev: self._plan(
                    session, feerate=feerate, tip=tip, accounts=accounts, prev=prev))
        except IntegrityError:  # another planner stored the live sweep first
            return SweepDecision(None, "a sweep is already in progress")
        except (PrevTxUnavailable, BackendUnavailable) as exc:
            return SweepDecision(None, f"the deposits' previous transactions: {exc}")

    async def _plan(self, session: AsyncSession, *, feerate: int, tip: int,
                    accounts: dict[str, AccountKey], prev: PrevTxs) -> SweepDecision:
        s = self.settings
        live = (await session.execute(select(PayoutBatch.id).where(
            PayoutBatch.kind == MoveKind.SWEEP, PayoutBatch.status.in_(LIVE_STATUSES)))
        ).scalar_one_or_none()
        if live is not None:
            return SweepDecision(None, f"sweep {live} is in progress")
        newest = tip - s.sweep_min_confirmations + 1
        reserved = select(PayoutInput.payment_id)
        coins = (await session.execute(
            select(OnchainPayment, OnchainAddress)
            .join(OnchainAddress, OnchainAddress.id == OnchainPayment.address_id)
            .join(OnchainWallet, OnchainWallet.id == OnchainAddress.wallet_id)
            .where(OnchainWallet.role == "deposit",
                   OnchainPayment.status == OnchainPaymentStatus.CONFIRMED,
                   OnchainPayment.credit_state == CreditState.CREDITED,
                   OnchainPayment.block_height <= newest, OnchainPayment.mature(tip),
                   OnchainPayment.spent_by.is_(None), OnchainPayment.id.not_in(reserved),
                   # A coin worth less than spending it costs at this feerate waits for
                   # cheaper fees (found from outside: a 294 sat deposit was swept at 20
                   # sat/vB, 1,360 sat of fee for it): sweeping it would lose money.
                   OnchainPayment.value_sat > P2WPKH_INPUT_VBYTES * feerate)
            .order_by(OnchainPayment.block_height, OnchainPayment.id)
            .limit(s.sweep_max_inputs))).all()
        if not coins:
            return SweepDecision(None, "no confirmed deposit coins to sweep")
        total = sum(p.value_sat for p, _ in coins)
        oldest = min(p.block_height or tip for p, _ in coins)
        if total < s.sweep_min_sat and tip - oldest + 1 < s.sweep_max_wait_blocks:
            return SweepDecision(None, f"{total} sat gathered, waiting for {s.sweep_min_sat} "
                                       f"or {s.sweep_max_wait_blocks} blocks")
        prev.require(p.txid for p, _ in coins)  # before any write: fetched outside
        coins = within_psbt_budget(coins, lambda c: len(prev.get(c[0].txid)), PREV_TX_BUDGET)
        total = sum(p.value_sat for p, _ in coins)
        cold_wallet = (await session.execute(select(OnchainWallet).where(
            OnchainWallet.role == "cold"))).scalar_one_or_none()
        anchor = await anchors.for_sweep(session, auto=s.audit_anchor_in_sweeps)
        extra = [anchor_script(anchor.seq, anchor.hash)] if anchor else []  # its vbytes too
        fee = estimate_vsize(len(coins), [_P2WPKH_SPK] + ([_P2WSH_SPK] if cold_wallet else [])
                             + extra) * feerate
        semicold = await semicold_sat(session) + await semicold_coming_sat(session)
        semi, cold = split_sweep(total - fee, semicold, percent=s.sweep_semicold_percent,
                                 floor_sat=s.semicold_floor_sat,
                                 ceiling_sat=s.semicold_ceiling_sat,
                                 has_cold=cold_wallet is not None)
        if cold_wallet is not None and (semi == 0 or cold == 0):
            fee = estimate_vsize(len(coins), [_P2WPKH_SPK if semi else _P2WSH_SPK, *extra]
                                 ) * feerate
            semi, cold = (total - fee, 0) if semi else (0, total - fee)
        if semi + cold < CHANGE_DUST_SAT:
            return SweepDecision(None, f"{total} sat do not cover the fee of {fee} sat")

        outputs: list[PsbtOutput] = []
        absorbs: int | None = None
        if semi:
            a = await allocate_address(session, role="hot", owner_type="platform",
                                       owner_id="semicold", purpose="sweep", request_id=None,
                                       change=True)
            outputs.append(PsbtOutput(a.script_pubkey, semi, a.index))
            absorbs = a.address_id
        if cold:
            assert cold_wallet is not None
            c = await allocate_address(session, role="cold", owner_type="platform",
                                       owner_id="cold", purpose="sweep", request_id=None)
            w = get_watch_only(cold_wallet)
            outputs.append(PsbtOutput(c.script_pubkey, cold, None,
                                      tuple(w.key_origins(c.index, change=c.chain)),
                                      w.witness_script(c.index, change=c.chain)))
            absorbs = c.address_id  # a fee bump comes out of the cold share
        outputs += [PsbtOutput(script, 0) for script in extra]  # the audit anchor: 0 sat
        inputs = [PsbtInput(p.txid, p.vout, p.value_sat, bytes.fromhex(p.script_pubkey),
                            "deposit", a.chain, a.idx, prev.get(p.txid)) for p, a in coins]
        psbt = make_psbt(inputs, outputs, network=s.network, fingerprint_and_paths=accounts)
        batch = await store_batch(session, MoveKind.SWEEP, psbt=psbt, feerate=feerate,
                                  fee=fee, change_address_id=absorbs,
                                  coin_ids=[p.id for p, _ in coins])
        if anchor is not None:
            await anchors.attach(session, anchor, batch_id=batch.id)
        log.info("sweep_planned", batch=batch.id, inputs=len(coins), to_semicold_sat=semi,
                 to_cold_sat=cold, fee_sat=fee, feerate=feerate, semicold_before_sat=semicold,
                 audit_anchor_seq=anchor.seq if anchor else None)
        return SweepDecision(batch.id, "planned", len(coins), semi, cold, fee,
                             anchor.seq if anchor else None)
