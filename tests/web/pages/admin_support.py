"""What the admin console's page tests share: an operator signed in through the form with
the second factor marked in the session, a funded merchant wallet, a second admin, a live
withdrawal policy or rule set made the way the platform requires (two admins), and a
withdrawal asked for through the one path the API takes."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import User, Wallet
from satvault.auth.sessions import WebSession, mark_mfa
from satvault.config import Settings
from satvault.kernel.ids import new_id
from satvault.kernel.retrying import retrying
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit_one
from satvault.payouts.models import Withdrawal
from satvault.risk import service as risk
from satvault.withdrawals.policy import service as policy
from satvault.withdrawals.service import PreparedDestination, withdraw
from tests.policy.support import add_approvers
from tests.web.pages.conftest import PASSWORD, csrf_of, sign_in

SAT = 1000
DEST = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"
ADMIN_PAGES = ["/admin", "/admin/accounts", "/admin/accounts?q=alice", "/admin/kyc",
               "/admin/cases", "/admin/approvals", "/admin/review", "/admin/audit",
               "/admin/reports"]


async def sign_in_admin(client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession],
                        email: str = "root@example.com", *, mfa: bool = True) -> None:
    """Sign in through the form; with ``mfa`` mark the second factor passed in that session
    (what the TOTP page does once it lands)."""
    r = await sign_in(client, email)
    assert r.status_code == 303, r.text
    if mfa:
        async with sessions() as s, s.begin():
            row = (await s.execute(select(WebSession).join(
                User, User.id == WebSession.user_id).where(User.email == email)
                .order_by(WebSession.created_at.desc()).limit(1))).scalar_one()
            await mark_mfa(s, session_id=row.id)


async def page_csrf(client: httpx.AsyncClient, path: str = "/admin") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def second_admin(sessions: async_sessionmaker[AsyncSession],
                       email: str = "ops@example.com") -> str:
    async with sessions() as s, s.begin():
        return (await acc.create_user(s, email=email, password=PASSWORD, is_admin=True)).id


async def merchant_wallet(sessions: async_sessionmaker[AsyncSession], merchant_id: str,
                          *, sat: int = 0) -> Wallet:
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=merchant_id)
        equity = (await ensure_platform_accounts(s, "BTC")).equity.id
    if sat:
        await submit_one(sessions, TransferSpec(new_id("fund"), equity,
                                                wallet.ledger_account_id, sat * SAT, "BTC"))
    return wallet


async def ask_withdrawal(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                         wallet: Wallet, sat: int, *, initiator: str | None) -> Withdrawal:
    """An on-chain withdrawal through :func:`withdraw`, as the API asks for one."""
    prepared = PreparedDestination("onchain", DEST, None, sat * SAT)

    async def wallet_for(s: AsyncSession) -> Wallet:  # read in the unit of work, as the API
        return (await s.execute(select(Wallet).where(Wallet.id == wallet.id))).scalar_one()

    async def work(s: AsyncSession) -> Withdrawal:
        return await withdraw(s, settings=settings, lightning=None, wallet_for=wallet_for,
                              prepared=prepared, initiator=initiator)
    return await retrying(sessions, work)


async def live_policy(sessions: async_sessionmaker[AsyncSession], *, admins: tuple[str, str],
                      approvers: list[str], rules: list[dict[str, Any]]) -> None:
    """Approvers in group ``treasury`` and ``rules`` live (proposed by one admin, approved
    by the other)."""
    async with sessions() as s, s.begin():
        await add_approvers(s, group="treasury", user_ids=approvers, admins=admins)
        v = await policy.propose_policy(s, admin=admins[0], raw={"rules": rules})
        await policy.approve_policy(s, admin=admins[1], version=v.version)


async def live_rules(sessions: async_sessionmaker[AsyncSession], doc: dict[str, Any]) -> None:
    async with sessions() as s, s.begin():
        rs = await risk.propose_rule_set(s, rules=doc, actor="user:a")
        await risk.approve_rule_set(s, version=rs.version, actor="user:b")
