"""What the sweep and refill planners share: the parts they work with, and the semi-cold
balance they both decide by (the books' figure, not the node's: a move is planned against
what is booked)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.base import ChainBackend
from satvault.config import Settings
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import get_account
from satvault.payouts.job import PayoutJob

__all__ = ["MovePlanner", "semicold_sat"]

MSAT = 1000


async def semicold_sat(session: AsyncSession) -> int:
    """The semi-cold wallet's booked balance in sat (its ledger account, posted)."""
    platform = await ensure_platform_accounts(session, "BTC")
    b = (await get_account(session, platform.hot_wallet.id)).balances
    return (b.debits_posted - b.credits_posted) // MSAT


class MovePlanner:
    """A planner of custody moves: it stores batches the payout job carries out."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: ChainBackend,
                 settings: Settings, payouts: PayoutJob) -> None:
        self.sessions = sessions
        self.backend = backend
        self.settings = settings
        self.payouts = payouts
