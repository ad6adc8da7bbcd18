"""The state of the world as Prometheus metric families, computed at scrape time.

A scrape runs a handful of aggregate queries (counts grouped by status, the custody tiers'
totals) and, when this process has node connections, asks the nodes for their tip and
liquidity, each call bounded by a timeout: a slow node costs one scrape a few seconds, it never
blocks it. Nothing here is kept between scrapes, so every API process answers the same thing.

:func:`gather` returns plain values (:class:`Snapshot`); :func:`families` turns them into
``prometheus_client`` metric families. The alerts worker reads the same snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.base import ChainBackend
from satvault.backends.lightning import LightningBackend
from satvault.custody.status import custody_status
from satvault.db import utcnow
from satvault.events.models import WAITING, DeliveryStatus, WebhookDelivery
from satvault.invoices.models import StoreInvoice
from satvault.invoices.status import Status
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from satvault.logs import get_logger
from satvault.metrics.models import AlertState
from satvault.onchain.models import ChainBlock, ReviewItem, ReviewKind
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.reconcile.models import ReconciliationIncident
from satvault.risk.models import RiskDecision
from satvault.risk.rules import Outcome

__all__ = ["NODE_TIMEOUT", "Snapshot", "families", "gather"]

log = get_logger(__name__)
NODE_TIMEOUT = 5.0
MSAT = 1000
T = TypeVar("T")


@dataclass
class Snapshot:
    invoices: dict[str, int] = field(default_factory=dict)
    ln_invoices: dict[str, int] = field(default_factory=dict)
    withdrawals: dict[tuple[str, str], int] = field(default_factory=dict)  # (rail, status)
    # (rail) → (confirmed, failed) among withdrawals finished in the last 24 hours
    finished_24h: dict[str, tuple[int, int]] = field(default_factory=dict)
    webhook_waiting: dict[str, int] = field(default_factory=dict)
    webhook_dead: int = 0
    webhook_oldest_seconds: float = 0.0
    risk_decisions: dict[str, int] = field(default_factory=dict)
    review_open: dict[str, int] = field(default_factory=dict)
    tiers: dict[str, tuple[int, int]] = field(default_factory=dict)  # tier → (ledger, coins) sat
    liabilities_msat: int = 0
    assets_onchain_msat: int = 0
    watcher_height: int | None = None
    chain_tip: int | None = None  # None: no node in this process, or it did not answer
    chain_up: bool | None = None  # None: no chain node configured here
    lightning_up: bool | None = None
    lightning_synced: bool | None = None
    lightning_local_msat: int | None = None
    lightning_remote_msat: int | None = None
    alerts: dict[str, bool] = field(default_factory=dict)

    @property
    def watcher_lag(self) -> int | None:
        if self.chain_tip is None or self.watcher_height is None:
            return None
        return max(0, self.chain_tip - self.watcher_height)

    # Open reconciliation incidents raised for a person (seen on two consecutive runs), by way.
    reconciliation_raised: dict[str, int] = field(default_factory=dict)

    @property
    def reconciliation_differences(self) -> int:
        """Differences the reconciliation raised and that have not gone away."""
        return sum(self.reconciliation_raised.values())


async def _bounded(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, timeout=NODE_TIMEOUT)


async def _database(sessions: async_sessionmaker[AsyncSession], snap: Snapshot) -> None:
    day_ago = utcnow() - timedelta(hours=24)
    async with sessions() as s:
        snap.invoices = {str(st): int(n) for st, n in (await s.execute(
            select(StoreInvoice.status, func.count()).group_by(StoreInvoice.status))).all()}
        snap.ln_invoices = {str(st): int(n) for st, n in (await s.execute(
            select(LnInvoice.status, func.count()).group_by(LnInvoice.status))).all()}
        snap.withdrawals = {(str(m), str(st)): int(n) for m, st, n in (await s.execute(
            select(Withdrawal.method, Withdrawal.status, func.count())
            .group_by(Withdrawal.method, Withdrawal.status))).all()}
        finished: dict[str, list[int]] = {}
        for m, st, n in (await s.execute(
                select(Withdrawal.method, Withdrawal.status, func.count())
                .where(Withdrawal.updated_at >= day_ago,
                       Withdrawal.status.in_((WithdrawalStatus.CONFIRMED,
                                              WithdrawalStatus.FAILED)))
                .group_by(Withdrawal.method, Withdrawal.status))).all():
            pair = finished.setdefault(str(m), [0, 0])
            pair[0 if st == WithdrawalStatus.CONFIRMED else 1] += int(n)
        snap.finished_24h = {m: (c, f) for m, (c, f) in finished.items()}
        snap.webhook_waiting = {str(st): int(n) for st, n in (await s.execute(
            select(WebhookDelivery.status, func.count()).where(WebhookDelivery.status.in_(WAITING))
            .group_by(WebhookDelivery.status))).all()}
        snap.webhook_dead = int((await s.execute(select(func.count()).where(
            WebhookDelivery.status == DeliveryStatus.DEAD))).scalar_one())
        oldest = (await s.execute(select(func.min(WebhookDelivery.created_at)).where(
            WebhookDelivery.status.in_(WAITING)))).scalar_one()
        if oldest is not None:
            snap.webhook_oldest_seconds = max(0.0, (utcnow() - oldest).total_seconds())
        snap.risk_decisions = {str(o): int(n) for o, n in (await s.execute(
            select(RiskDecision.outcome, func.count()).group_by(RiskDecision.outcome))).all()}
        snap.review_open = {str(k): int(n) for k, n in (await s.execute(
            select(ReviewItem.kind, func.count()).where(ReviewItem.resolved_at.is_(None))
            .group_by(ReviewItem.kind))).all()}
        snap.reconciliation_raised = {str(k): int(n) for k, n in (await s.execute(
            select(ReconciliationIncident.way, func.count())
            .where(ReconciliationIncident.resolved_at.is_(None),
                   ReconciliationIncident.raised_at.is_not(None))
            .group_by(ReconciliationIncident.way))).all()}
        snap.watcher_height = (await s.execute(select(func.max(ChainBlock.height)))).scalar_one()
        snap.alerts = {name: bool(firing) for name, firing in (await s.execute(
            select(AlertState.name, AlertState.firing))).all()}
    custody = await custody_status(sessions, None)
    snap.tiers = {t: (st.ledger_sat, st.coins_sat) for t, st in custody.tiers.items()}
    snap.liabilities_msat = custody.liabilities_msat
    snap.assets_onchain_msat = custody.assets_msat


async def _chain(backend: ChainBackend, snap: Snapshot) -> None:
    try:
        snap.chain_tip = (await _bounded(backend.tip())).height
        snap.chain_up = True
    except Exception as exc:  # reported as a metric, never raised into the scrape
        snap.chain_up = False
        log.warning("metrics_chain_unavailable", error=f"{type(exc).__name__}: {exc}")


async def _lightning(lightning: LightningBackend, snap: Snapshot) -> None:
    try:
        info = await _bounded(lightning.get_info())
        balances = await _bounded(lightning.balances())
    except Exception as exc:  # reported as a metric, never raised into the scrape
        snap.lightning_up = False
        log.warning("metrics_lightning_unavailable", error=f"{type(exc).__name__}: {exc}")
        return
    snap.lightning_up, snap.lightning_synced = True, bool(info.synced)
    snap.lightning_local_msat = balances.channel_local_msat
    snap.lightning_remote_msat = balances.channel_remote_msat


async def gather(sessions: async_sessionmaker[AsyncSession], *,
                 backend: ChainBackend | None = None,
                 lightning: LightningBackend | None = None) -> Snapshot:
    """The database's figures, then (if given) the nodes', each node call time-bounded."""
    snap = Snapshot()
    await _database(sessions, snap)
    nodes = []
    if backend is not None:
        nodes.append(_chain(backend, snap))
    if lightning is not None:
        nodes.append(_lightning(lightning, snap))
    await asyncio.gather(*nodes)
    return snap


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


def _single(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def families(snap: Snapshot) -> list[Metric]:
    """The snapshot as metric families. Every known status gets a sample, zero included, so
    that a rule's series exists before the first event of its kind."""
    out: list[Metric] = []
    g = _gauge("satvault_invoices", "Store invoices by status.", ["status"])
    for st in Status:
        g.add_metric([st.value], snap.invoices.get(st.value, 0))
    out.append(g)
    g = _gauge("satvault_ln_invoices", "Lightning invoices by status.", ["status"])
    for ls in LnInvoiceStatus:
        g.add_metric([ls.value], snap.ln_invoices.get(ls.value, 0))
    out.append(g)
    g = _gauge("satvault_withdrawals", "Withdrawals (outgoing payments) by rail and status.",
               ["rail", "status"])
    for m in WithdrawalMethod:
        for ws in WithdrawalStatus:
            g.add_metric([m.value, ws.value], snap.withdrawals.get((m.value, ws.value), 0))
    out.append(g)
    g = _gauge("satvault_payment_success_ratio", "Of the withdrawals that finished in the last "
               "24 hours, the share confirmed (the rest failed), by rail; absent without any.",
               ["rail"])
    for rail, (ok, failed) in sorted(snap.finished_24h.items()):
        if ok + failed:
            g.add_metric([rail], ok / (ok + failed))
    out.append(g)
    g = _gauge("satvault_webhook_backlog", "Webhook deliveries waiting to be sent: pending "
               "(not tried yet) or failed (waiting for a retry).", ["status"])
    for ds in WAITING:
        g.add_metric([ds.value], snap.webhook_waiting.get(ds.value, 0))
    out.append(g)
    out.append(_single("satvault_webhook_backlog_oldest_seconds",
                       "Age of the oldest waiting webhook delivery (0 without any).",
                       snap.webhook_oldest_seconds))
    out.append(_single("satvault_webhook_dead_deliveries",
                       "Webhook deliveries that gave up after their last retry.",
                       snap.webhook_dead))
    c = CounterMetricFamily("satvault_risk_decisions", "Risk decisions recorded, by outcome.",
                            labels=["outcome"])
    for o in Outcome:
        c.add_metric([o.value], snap.risk_decisions.get(o.value, 0))
    out.append(c)
    g = _gauge("satvault_review_items_open", "Items waiting for a person, by kind "
               "(reconciliation_difference, signer_limit, payout_stuck …).", ["kind"])
    for kind in sorted({k.value for k in ReviewKind} | set(snap.review_open)):
        g.add_metric([kind], snap.review_open.get(kind, 0))
    out.append(g)
    out.append(_single("satvault_reconciliation_differences", "Reconciliation differences "
                       "(ledger, records, nodes) raised and not gone away yet.",
                       snap.reconciliation_differences))
    g = _gauge("satvault_reconciliation_differences_by_way", "Raised reconciliation "
               "differences still open, by way (ledger, records, world).", ["way"])
    for way in ("ledger", "records", "world"):
        g.add_metric([way], snap.reconciliation_raised.get(way, 0))
    out.append(g)
    ledger = _gauge("satvault_custody_ledger_sat", "Each custody tier's ledger account (sat).",
                    ["tier"])
    coins = _gauge("satvault_custody_coins_sat", "The coins the watcher holds for each tier "
                   "(sat).", ["tier"])
    diff = _gauge("satvault_custody_difference_sat", "Ledger minus coins, per tier (sat); "
                  "briefly non-zero between a block and its booking.", ["tier"])
    for tier, (lsat, csat) in sorted(snap.tiers.items()):
        ledger.add_metric([tier], lsat)
        coins.add_metric([tier], csat)
        diff.add_metric([tier], lsat - csat)
    out += [ledger, coins, diff]
    out.append(_single("satvault_liabilities_msat", "What the platform owes its users and "
                      "merchants: every wallet's balance (msat).", snap.liabilities_msat))
    assets = snap.assets_onchain_msat + (snap.lightning_local_msat or 0)
    out.append(_single("satvault_assets_msat", "On-chain coins of every tier plus the "
                      "Lightning channels' local balance (msat).", assets))
    if snap.liabilities_msat:
        out.append(_single("satvault_reserve_ratio", "Assets over liabilities.",
                           assets / snap.liabilities_msat))
    if snap.watcher_height is not None:
        out.append(_single("satvault_watcher_height", "The last block the chain watcher "
                          "processed.", snap.watcher_height))
    up = _gauge("satvault_node_up", "Whether this process reached the node at the scrape "
                "(1) or not (0), by node; absent where no node is configured.", ["node"])
    if snap.chain_up is not None:
        up.add_metric(["chain"], int(snap.chain_up))
    if snap.lightning_up is not None:
        up.add_metric(["lightning"], int(snap.lightning_up))
    out.append(up)
    if snap.chain_tip is not None:
        out.append(_single("satvault_chain_tip_height", "The chain node's tip.", snap.chain_tip))
    if snap.watcher_lag is not None:
        out.append(_single("satvault_watcher_lag_blocks", "Blocks between the node's tip and "
                          "the last block the watcher processed.", snap.watcher_lag))
    if snap.lightning_synced is not None:
        out.append(_single("satvault_lightning_synced", "Whether the Lightning node reports "
                          "itself synced to the chain.", int(snap.lightning_synced)))
    if snap.lightning_local_msat is not None:
        liq = _gauge("satvault_lightning_liquidity_msat", "Lightning channel balances: out "
                     "(ours, what we can send) and in (the peers', what we can receive).",
                     ["direction"])
        liq.add_metric(["out"], snap.lightning_local_msat)
        liq.add_metric(["in"], snap.lightning_remote_msat or 0)
        out.append(liq)
    g = _gauge("satvault_alert_firing", "The alerts worker's critical conditions: 1 while one "
               "is open.", ["alert"])
    for name, firing in sorted(snap.alerts.items()):
        g.add_metric([name], int(firing))
    out.append(g)
    return out
