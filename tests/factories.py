"""Test factories: accounts and funded wallets in one place."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.ledger.core import Account, AccountKind, TransferSpec
from satvault.ledger.platform import PlatformAccounts, ensure_platform_accounts
from satvault.ledger.store import create_account, get_account, submit

_n = itertools.count()


@dataclass
class Books:
    platform: PlatformAccounts
    wallets: list[Account]


async def wallet(session: AsyncSession, asset: str = "BTC", name: str | None = None) -> Account:
    return await create_account(
        session, name=name or f"test:wallet:{next(_n)}", asset=asset,
        kind=AccountKind.CUSTOMER_WALLET, debits_must_not_exceed_credits=True)


async def books(sessions: async_sessionmaker[AsyncSession], *, wallets: int = 2,
                fund: int = 0, asset: str = "BTC") -> Books:
    """Platform accounts plus ``wallets`` customer wallets, each credited ``fund``."""
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, asset)
        made = [await wallet(s, asset) for _ in range(wallets)]
    if fund:
        outcomes = await submit(sessions, [
            TransferSpec(id=f"fund:{w.id}:{next(_n)}", debit_account_id=platform.external.id,
                         credit_account_id=w.id, amount=fund, asset=asset, code="deposit")
            for w in made])
        assert all(o.ok for o in outcomes), outcomes
    return Books(platform, made)


async def account(sessions: async_sessionmaker[AsyncSession], account_id: int) -> Account:
    async with sessions() as s:
        return await get_account(s, account_id)


async def merchant_wallet(session: AsyncSession, owner_user_id: str | None,
                          name: str = "Shop") -> tuple[str, Wallet]:
    """A merchant ``owner_user_id`` owns (None: nobody) and its wallet: for an owner, the
    second wallet of the owner's person. The merchant's id and the wallet."""
    merchant = await acc.create_merchant(session, name=name, owner_user_id=owner_user_id)
    return merchant.id, await acc.ensure_wallet(session, owner_type="merchant",
                                                owner_id=merchant.id)
