"""What the policy tests share: people (two admins, approvers), a live policy made the way
the platform requires (proposed by one admin, approved by another), and a withdrawal asked
for through the one path, :func:`~satvault.withdrawals.service.withdraw`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.config import Settings
from satvault.kernel.retrying import retrying
from satvault.payouts.models import Withdrawal
from satvault.withdrawals.policy import service
from satvault.withdrawals.service import PreparedDestination, withdraw


@dataclass
class People:
    admin1: str
    admin2: str
    bob: str  # approvers of "treasury"
    carol: str
    dave: str


async def people(sessions: async_sessionmaker[AsyncSession], *, initiator: str) -> People:
    """Two admins; bob, carol and dave approvers of ``treasury``, and the initiator too (a
    member of the group still never approves their own withdrawal)."""
    async with sessions() as s, s.begin():
        a1 = await acc.create_user(s, email="admin1@example.com", is_admin=True)
        a2 = await acc.create_user(s, email="admin2@example.com", is_admin=True)
        ids = [(await acc.create_user(s, email=f"{n}@example.com")).id
               for n in ("bob", "carol", "dave")]
        await add_approvers(s, group="treasury", user_ids=[*ids, initiator],
                            admins=(a1.id, a2.id))
    return People(a1.id, a2.id, *ids)


async def add_approvers(s: AsyncSession, *, group: str, user_ids: list[str],
                        admins: tuple[str, str]) -> None:
    """Members added the only way there is: each proposed by one admin, approved (and so
    applied) by the other, in the caller's unit of work."""
    for uid in user_ids:
        change = await service.propose_group_change(s, admin=admins[0], group=group,
                                                    user_id=uid, action="add")
        await service.approve_group_change(s, admin=admins[1], change_id=change.id)


async def make_live(sessions: async_sessionmaker[AsyncSession], who: People,
                    rules: list[dict[str, Any]]) -> int:
    async with sessions() as s, s.begin():
        v = await service.propose_policy(s, admin=who.admin1, raw={"rules": rules})
        await service.approve_policy(s, admin=who.admin2, version=v.version)
        return v.version


async def request(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                  wallet: Wallet, destination: str, sat: int, *,
                  initiator: str | None) -> Withdrawal:
    prepared = PreparedDestination("onchain", destination, None, sat * 1000)

    async def wallet_for(_s: AsyncSession) -> Wallet:
        return wallet

    async def work(s: AsyncSession) -> Withdrawal:
        return await withdraw(s, settings=settings, lightning=None, wallet_for=wallet_for,
                              prepared=prepared, initiator=initiator)
    return await retrying(sessions, work)
