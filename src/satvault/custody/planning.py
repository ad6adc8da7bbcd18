"""What the sweep and refill planners share: the parts they work with, and the semi-cold
balance they both decide by (the books' figure, not the node's: a move is planned against
what is booked)."""

from __future__ import annotations

from embit.psbt import PSBT
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.base import ChainBackend
from satvault.config import Settings
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import get_account
from satvault.onchain.models import OnchainAddress, OnchainWallet
from satvault.payouts.job import PayoutJob
from satvault.payouts.models import LIVE_STATUSES, MoveKind, PayoutBatch

__all__ = ["MovePlanner", "semicold_coming_sat", "semicold_sat"]

MSAT = 1000


async def semicold_sat(session: AsyncSession) -> int:
    """The semi-cold wallet's booked balance in sat (its ledger account, posted)."""
    platform = await ensure_platform_accounts(session, "BTC")
    b = (await get_account(session, platform.hot_wallet.id)).balances
    return (b.debits_posted - b.credits_posted) // MSAT


async def semicold_coming_sat(session: AsyncSession) -> int:
    """What the sweeps and refills planned but not yet booked pay into the semi-cold wallet,
    in sat: its outputs of their transactions. A planner counts it with the booked balance
    (found from outside: sweeps planned while a refill waited days for its cosigners kept
    filling semi-cold, and the refill then carried it past its ceiling)."""
    psbts = (await session.execute(select(PayoutBatch.psbt).where(
        PayoutBatch.kind.in_((MoveKind.SWEEP, MoveKind.REFILL)),
        PayoutBatch.status.in_(LIVE_STATUSES)))).scalars().all()
    if not psbts:
        return 0
    outputs = [(o.script_pubkey.data.hex(), o.value)
               for psbt in psbts for o in PSBT.from_string(psbt).tx.vout]
    ours = set((await session.execute(
        select(OnchainAddress.script_pubkey)
        .join(OnchainWallet, OnchainWallet.id == OnchainAddress.wallet_id)
        .where(OnchainWallet.role == "hot",
               OnchainAddress.script_pubkey.in_({spk for spk, _ in outputs})))).scalars())
    return sum(value for spk, value in outputs if spk in ours)


class MovePlanner:
    """A planner of custody moves: it stores batches the payout job carries out."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: ChainBackend,
                 settings: Settings, payouts: PayoutJob) -> None:
        self.sessions = sessions
        self.backend = backend
        self.settings = settings
        self.payouts = payouts
