"""The one correction an existing database needs when it first gets custody tiers.

Before migration 0015 the chain watcher booked every deposit on ``platform:hot_wallet``; since
then it books them on ``platform:deposit_wallet``, and a sweep takes them from there. Deposit
coins credited before the upgrade and not yet spent are therefore on the wrong account: the
deposit tier's books are short by their value and the semi-cold tier's books over by the
same. :func:`rebook_legacy_deposits` moves exactly that amount, once (a fixed transfer id), and
only when the figures say so: the deposit tier short by D and the semi-cold tier over by at
least D. Anything else is a difference for a person (``satvault custody status``), not for
this function.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.custody.status import custody_status
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import create_transfers, lookup_transfer
from satvault.logs import get_logger

__all__ = ["REBOOK_ID", "Rebooked", "rebook_legacy_deposits"]

log = get_logger(__name__)
REBOOK_ID = "custody:0015:deposits-to-deposit-wallet"
MSAT = 1000


@dataclass(frozen=True, slots=True)
class Rebooked:
    amount_sat: int
    reason: str


async def rebook_legacy_deposits(sessions: async_sessionmaker[AsyncSession]) -> Rebooked:
    async with sessions() as s:
        if await lookup_transfer(s, REBOOK_ID) is not None:
            return Rebooked(0, "already done")
    status = await custody_status(sessions, None)
    deposit, semi = status.tiers["deposit"], status.tiers["semicold"]
    short = deposit.coins_sat - deposit.ledger_sat
    over = semi.ledger_sat - semi.coins_sat
    if short <= 0:
        return Rebooked(0, "the deposit tier's books hold its coins: nothing to move")
    if over < short:
        return Rebooked(0, f"the deposit tier is short {short} sat but semi-cold is over by "
                           f"only {over}: not the upgrade's pattern, see custody status")

    async def book(session: AsyncSession) -> None:
        p = await ensure_platform_accounts(session, "BTC")
        (outcome,) = await create_transfers(session, [TransferSpec(
            REBOOK_ID, p.deposit_wallet.id, p.hot_wallet.id, short * MSAT, "BTC",
            code="custody_upgrade", ref="0015")])
        if not outcome.ok:
            raise RuntimeError(f"the ledger refused the upgrade correction: {outcome.result}")

    async with sessions() as session, session.begin():
        await book(session)
    log.warning("custody_upgrade_rebooked", amount_sat=short)
    return Rebooked(short, "moved from hot_wallet to deposit_wallet")
