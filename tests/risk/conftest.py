"""Helpers of the rules-engine tests: a customer's wallet, a rule set made live by two
admins, history written straight into the tables the features read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.db import utcnow
from satvault.kernel.ids import new_id
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit_one
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.risk import service as risk
from satvault.risk.features import Event

SAT = 1000
ADDR = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"


@dataclass
class Ctx:
    sessions: async_sessionmaker[AsyncSession]
    wallet: Wallet

    def event(self, amount_msat: int, *, destination: str = ADDR, counterparty: str | None = None,
              rail: str = "onchain", direction: str = "out") -> Event:
        w = self.wallet
        return Event(wallet_id=w.id, ledger_account_id=w.ledger_account_id,
                     owner_type=w.owner_type, owner_id=w.owner_id, amount_msat=amount_msat,
                     direction=direction, rail=rail, destination=destination,
                     counterparty=destination if counterparty is None else counterparty)

    async def out(self, amount_msat: int, *, ago: timedelta = timedelta(minutes=5),
                  destination: str = ADDR,
                  method: WithdrawalMethod = WithdrawalMethod.LIGHTNING,
                  n: int = 1, status: WithdrawalStatus = WithdrawalStatus.CONFIRMED,
                  released_ago: timedelta | None = None) -> None:
        """``n`` past withdrawals (history only: no hold, nothing paid); ``released_ago``:
        held and released that long ago."""
        at = utcnow() - ago
        released = None if released_ago is None else utcnow() - released_ago
        async with self.sessions() as s, s.begin():
            for _ in range(n):
                wid = new_id("wd")
                s.add(Withdrawal(id=wid, wallet_id=self.wallet.id, method=method,
                                 destination=destination, script_pubkey=None,
                                 amount_msat=amount_msat, fee_reserve_msat=0, fee_msat=None,
                                 status=status,
                                 batch_id=None, txid=None, hold_id=f"wd:{wid}:hold",
                                 created_at=at, updated_at=at, released_at=released))

    async def into(self, amount_msat: int) -> None:
        """Money in now (a ledger credit to the wallet, as a deposit is)."""
        async with self.sessions() as s, s.begin():
            equity = (await ensure_platform_accounts(s, "BTC")).equity.id
        await submit_one(self.sessions, TransferSpec(
            new_id("fund"), equity, self.wallet.ledger_account_id, amount_msat, "BTC"))

    async def screen(self, event: Event) -> risk.Screening:
        async with self.sessions() as s, s.begin():
            return await risk.screen(s, event)

    async def live(self, doc: dict[str, Any]) -> int:
        """Make ``doc`` the live rule set: proposed by one admin, approved by another."""
        async with self.sessions() as s, s.begin():
            rs = await risk.propose_rule_set(s, rules=doc, actor="user:admin-a")
            await risk.approve_rule_set(s, version=rs.version, actor="user:admin-b")
            return rs.version


def default_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(risk.default_rule_set_json())
    return doc


@pytest.fixture
async def ctx(sessions: async_sessionmaker[AsyncSession]) -> Ctx:
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="risk@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
    return Ctx(sessions, wallet)
