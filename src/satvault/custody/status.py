"""What the platform holds, tier by tier, against its books and what it owes: the custody
part of the reconciliation (:mod:`satvault.reconcile` runs it on every block with the rest).

For each tier (``deposit``, ``semicold`` — the wallet named ``hot`` in the tables —, ``cold``)
three figures are set side by side:

* ``ledger_sat``: the tier's ledger account (``deposit_wallet``, ``hot_wallet``,
  ``cold_wallet``), debits minus credits, incoming holds included;
* ``coins_sat``: the coins the chain watcher recorded for the tier that the books should
  hold: unspent, not conflicted, credited (or an output of a booked move, or change);
* ``node_sat``: those of them the node still has (``gettxout``, mempool included), plus any
  spent by one of our own moves that is not booked yet.

A reconciliation *difference* is any disagreement: ``ledger_sat != coins_sat`` for a tier,
or a coin the books hold that the node no longer has and no move of ours spent (spent outside
satvault, or gone in a reorg the watcher has not processed). Differences are named row by row;
:mod:`satvault.reconcile` keeps them as incidents and raises those that persist.

The node calls are made with no database transaction open (coins are read first, the ledger
last).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.base import ChainBackend
from satvault.backends.errors import BackendUnavailable
from satvault.backends.lightning import LightningBackend
from satvault.ledger.models import LedgerAccount
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import WALLET_KINDS, get_account
from satvault.logs import get_logger
from satvault.onchain.models import (
    CreditState,
    OnchainAddress,
    OnchainPayment,
    OnchainPaymentStatus,
    OnchainWallet,
)
from satvault.payouts.models import (
    LIVE_STATUSES,
    BatchStatus,
    PayoutBatch,
    PayoutInput,
    PayoutTx,
)

__all__ = ["TIERS", "CustodyStatus", "Difference", "custody_status"]

log = get_logger(__name__)
MSAT = 1000
# tier name → (wallet role in onchain_wallets, platform ledger account)
TIERS = {"deposit": ("deposit", "deposit_wallet"), "semicold": ("hot", "hot_wallet"),
         "cold": ("cold", "cold_wallet")}


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str  # "tier_total" | "coin_missing"
    subject: str  # the tier, or the coin's outpoint
    detail: str


@dataclass
class TierStatus:
    ledger_sat: int = 0
    coins_sat: int = 0
    node_sat: int | None = None
    coins: int = 0


@dataclass
class CustodyStatus:
    height: int | None
    tiers: dict[str, TierStatus]
    lightning: dict[str, int] | None
    liabilities_msat: int
    assets_msat: int
    differences: list[Difference] = field(default_factory=list)

    @property
    def reserve_ratio(self) -> float | None:
        return None if self.liabilities_msat == 0 else self.assets_msat / self.liabilities_msat

    def as_dict(self) -> dict[str, Any]:
        return {"height": self.height,
                "tiers": {k: asdict(v) for k, v in self.tiers.items()},
                "lightning": self.lightning,
                "liabilities_msat": self.liabilities_msat,
                "assets_msat": self.assets_msat,
                "reserve_ratio": None if self.reserve_ratio is None
                else round(self.reserve_ratio, 6),
                "differences": [asdict(d) for d in self.differences]}


async def _held_coins(session: AsyncSession) -> list[tuple[str, str, int, int, bool]]:
    """(role, txid, vout, value, spent by a live move of ours) for every coin the books hold."""
    P, A, W = OnchainPayment, OnchainAddress, OnchainWallet
    unbooked_moves = select(PayoutBatch.txid).where(PayoutBatch.txid.is_not(None),
                                                    PayoutBatch.status != BatchStatus.CONFIRMED)
    booked_moves = select(PayoutBatch.txid).where(PayoutBatch.status == BatchStatus.CONFIRMED,
                                                  PayoutBatch.txid.is_not(None))
    live = PayoutBatch.status.in_(LIVE_STATUSES)
    live_inputs = select(PayoutInput.payment_id).join(
        PayoutBatch, PayoutBatch.id == PayoutInput.batch_id).where(live)
    # Spent by a live move of ours: by one of its own transactions (a fee bump's versions
    # included), or by nothing the watcher saw yet while the move has a transaction (sent,
    # or about to be). A coin a stranger spent is not, whatever move reserved it (found
    # from outside: a cold coin taken while its refill waited for cosigners was counted as
    # held for days).
    versions = select(PayoutTx.txid).join(PayoutBatch, PayoutBatch.id == PayoutTx.batch_id) \
        .where(live)
    sent_inputs = live_inputs.where(select(PayoutTx.id).where(
        PayoutTx.batch_id == PayoutBatch.id).exists())
    ours = P.spent_by.in_(versions) | (P.spent_by.is_(None) & P.id.in_(sent_inputs))
    rows = (await session.execute(
        select(W.role, P.txid, P.vout, P.value_sat, ours)
        .join(A, A.id == P.address_id).join(W, W.id == A.wallet_id)
        # Spent by nobody, or reserved by a live move of ours not booked yet: the books hold
        # it until the move is booked (found from outside: once the watcher saw a payout in
        # the mempool its coins dropped out here, and every payout in flight was a
        # difference); the node is asked unless one of the move's transactions spent it.
        .where(P.spent_by.is_(None) | P.id.in_(live_inputs),
               P.status != OnchainPaymentStatus.CONFLICTED,
               P.txid.not_in(unbooked_moves),
               P.credit_state.in_((CreditState.CREDITED, CreditState.PENDING))
               | (A.purpose == "change") | P.txid.in_(booked_moves))
        .order_by(P.id))).all()
    return [(r[0], r[1], int(r[2]), int(r[3]), bool(r[4])) for r in rows]


async def _ledger(session: AsyncSession) -> tuple[dict[str, int], int, int]:
    """Each tier's account (sat), the Lightning asset account (msat), liabilities (msat)."""
    platform = await ensure_platform_accounts(session, "BTC")
    out = {}
    for tier, (_, name) in TIERS.items():
        b = (await get_account(session, getattr(platform, name).id)).balances
        out[tier] = (b.debits_posted + b.debits_pending - b.credits_posted) // MSAT
    ln = (await get_account(session, platform.lightning.id)).balances
    liabilities = (await session.execute(select(
        func.coalesce(func.sum(LedgerAccount.credits_posted - LedgerAccount.debits_posted), 0))
        .where(LedgerAccount.asset == "BTC",
               LedgerAccount.kind.in_([k.value for k in WALLET_KINDS])))).scalar_one()
    return out, ln.debits_posted - ln.credits_posted, int(liabilities)


async def custody_status(sessions: async_sessionmaker[AsyncSession], backend: ChainBackend | None,
                         lightning: LightningBackend | None = None) -> CustodyStatus:
    """The figures above; with ``backend`` None, the node column is left out."""
    async with sessions() as s:
        coins = await _held_coins(s)
    height: int | None = None
    node: dict[str, int] | None = None
    differences: list[Difference] = []
    if backend is not None:
        height = (await backend.tip()).height
        node = {tier: 0 for tier in TIERS}
        role_tier = {role: tier for tier, (role, _) in TIERS.items()}
        for role, txid, vout, value, spent_by_us in coins:
            tier = role_tier.get(role)
            if tier is None:
                continue
            if spent_by_us or await backend.output(txid, vout, include_mempool=True) is not None:
                node[tier] += value
            else:
                differences.append(Difference(
                    "coin_missing", f"{txid}:{vout}",
                    f"{value} sat of the {tier} wallet: the books hold it, the node does not "
                    "have it, and no move of ours spent it"))
    ln_status: dict[str, int] | None = None
    async with sessions() as s:
        ledger, ln_ledger_msat, liabilities = await _ledger(s)
    if lightning is not None:
        try:
            b = await lightning.balances()
            ln_status = {"channel_local_msat": b.channel_local_msat,
                         "channel_remote_msat": b.channel_remote_msat,
                         "ledger_msat": ln_ledger_msat}
        except BackendUnavailable as exc:
            log.warning("custody_lightning_unavailable", error=str(exc))
    tiers: dict[str, TierStatus] = {}
    for tier, (role, _) in TIERS.items():
        held = [c for c in coins if c[0] == role]
        t = TierStatus(ledger_sat=ledger[tier], coins_sat=sum(c[3] for c in held),
                       node_sat=node[tier] if node is not None else None, coins=len(held))
        tiers[tier] = t
        if t.ledger_sat != t.coins_sat:
            differences.append(Difference(
                "tier_total", tier, f"the ledger has {t.ledger_sat} sat, the {tier} wallet's "
                f"coins add up to {t.coins_sat} sat"))
    assets = sum(t.coins_sat for t in tiers.values()) * MSAT + \
        (ln_status["channel_local_msat"] if ln_status else 0)
    return CustodyStatus(height, tiers, ln_status, liabilities, assets, differences)
