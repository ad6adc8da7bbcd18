"""Fixtures for the LNURL server tests: the app over a real (migrated) database with a fake
Lightning backend, reached through ``httpx.ASGITransport`` at ``http://lnurl.test``, and two
users, alice and bob, each with a wallet and a full-scope API key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.config import Settings
from satvault.ledger.check import check_ledger
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import get_account, submit
from satvault.web.app import create_app
from tests.lightning_lnurl.fakes import FakeLightning

BASE = "http://lnurl.test"
FULL = ["wallet:read", "wallet:write", "withdrawals:write"]


@dataclass
class LnEnv:
    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    lightning: FakeLightning
    wallets: dict[str, Wallet]
    keys: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def fund(self, who: str, msat: int) -> None:
        async with self.sessions() as s, s.begin():
            platform = await ensure_platform_accounts(s, "BTC")
        (outcome,) = await submit(self.sessions, [TransferSpec(
            f"fund:{who}:{msat}", platform.external.id, self.wallets[who].ledger_account_id,
            msat, "BTC", code="deposit")])
        assert outcome.ok, outcome

    async def balance(self, who: str) -> dict[str, int]:
        async with self.sessions() as s:
            b = (await get_account(s, self.wallets[who].ledger_account_id)).balances
        return {"available": b.credits_posted - b.debits_posted - b.debits_pending,
                "held": b.debits_pending, "posted": b.credits_posted - b.debits_posted}

    async def check(self) -> None:
        async with self.sessions() as s:
            report = await check_ledger(s)
        assert report.ok, report.as_dict()


def lnurl_settings(db_url: str, home: Path) -> Settings:
    return Settings(database_url=db_url, home=home, public_url=BASE, network="regtest",
                    environment="development")


@pytest.fixture
async def ln(sessions, db_url, tmp_path) -> AsyncIterator[LnEnv]:
    settings = lnurl_settings(db_url, tmp_path)
    fake = FakeLightning()
    runtime = SimpleNamespace(lightning=fake, payer_wake=None, backend=None)
    app = create_app(settings, engine=sessions.kw["bind"], start_workers=False,
                     runtime=runtime)  # type: ignore[arg-type]
    wallets, keys = {}, {}
    async with sessions() as s, s.begin():
        await ensure_platform_accounts(s, "BTC")
        for who in ("alice", "bob"):
            user = await acc.create_user(s, email=f"{who}@example.com")
            wallets[who] = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
            _, keys[who] = await acc.create_api_key(s, owner_id=user.id, scopes=FULL)
            _, keys[f"{who}_read"] = await acc.create_api_key(s, owner_id=user.id,
                                                              scopes=["wallet:read"])
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield LnEnv(client, sessions, settings, fake, wallets, keys)
