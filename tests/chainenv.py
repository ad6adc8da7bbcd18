"""On-chain fixtures: a simnet chain served over bitcoind's JSON-RPC on a local port, the
`bitcoind` adapter talking to it over HTTP, an in-process signer, and the platform's runtime
(watcher + payout job) over a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.backends.bitcoind import BitcoindBackend
from satvault.composition import Runtime, register_signer_wallets
from satvault.config import Settings
from satvault.ledger.check import check_ledger
from satvault.ledger.store import get_account
from satvault.signer.core import HotSigner
from satvault.signer.inprocess import InProcessSigner
from satvault.simnet.chain import Chain
from satvault.simnet.rpc import SimnetServer

SEED = bytes(range(64))


@dataclass
class Env:
    chain: Chain
    server: SimnetServer
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    runtime: Runtime
    signer: InProcessSigner
    wallet: Wallet

    def new_runtime(self) -> Runtime:
        """A fresh watcher and payout job over the same database: a process restart."""
        return Runtime.build(self.settings, self.sessions,
                             backend=BitcoindBackend(self.server.url, retries=1, backoff=0.01),
                             signer=self.signer)

    async def balances(self, wallet: Wallet | None = None) -> dict[str, int]:
        w = wallet or self.wallet
        async with self.sessions() as s:
            b = (await get_account(s, w.ledger_account_id)).balances
        return {"available": b.credits_posted - b.debits_posted - b.debits_pending,
                "incoming": b.credits_pending, "held": b.debits_pending,
                "posted": b.credits_posted - b.debits_posted}

    async def sweep(self) -> str:
        """Sweep every confirmed deposit coin into the semi-cold (and, if configured, cold)
        wallet and see the sweep confirmed and booked, as the custody and payout workers
        would; returns the sweep's batch id."""
        decision = await self.runtime.sweeps.step()
        assert decision.batch_id is not None, decision.reason
        report = await self.runtime.payouts.advance()
        assert report.broadcast == 1, report
        self.chain.mine(1)
        await self.runtime.watcher.step()
        report = await self.runtime.payouts.advance()
        assert report.confirmed == 1, report
        return decision.batch_id

    async def check(self) -> None:
        async with self.sessions() as s:
            report = await check_ledger(s)
        assert report.ok, report.as_dict()


UNLIMITED_TIERS = {t: {r: [10**18] * 3 for r in ("onchain", "lightning", "internal")}
                   for t in range(3)}


def make_settings(db_url: str, home: Path, url: str, **overrides: object) -> Settings:
    base: dict[str, object] = dict(
        database_url=db_url, home=home, network="regtest", chain_backend="bitcoind",
        bitcoind_url=url, deposit_confirmations=1, payout_confirmations=1,
        zero_conf_max_sat=100_000, withdrawal_fee_reserve_sat=5_000, min_feerate_sat_vb=1,
        max_feerate_sat_vb=500, sweep_min_confirmations=1, sweep_min_sat=0,
        # KYC tier limits are tested in tests/kyc; elsewhere every tier may move anything.
        kyc_tier_limits_msat=UNLIMITED_TIERS)
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {}


@pytest.fixture
async def env(sessions, db_url, tmp_path, settings_overrides) -> AsyncIterator[Env]:
    chain = Chain()
    server = SimnetServer(chain, port=0, user="u", password="p")
    server.start()
    settings = make_settings(db_url, tmp_path, server.url, **settings_overrides)
    signer = InProcessSigner(HotSigner(
        SEED, "regtest", audit_log=tmp_path / "audit.jsonl",
        cold_descriptor=settings.cold_descriptor or None,
        max_tx_sat=settings.signer_max_tx_sat, max_daily_sat=settings.signer_max_daily_sat))
    async with sessions() as s, s.begin():
        await register_signer_wallets(s, signer, settings)
        user = await acc.create_user(s, email="alice@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
    backend = BitcoindBackend(server.url, retries=1, backoff=0.01)
    runtime = Runtime.build(settings, sessions, backend=backend, signer=signer)
    e = Env(chain, server, settings, sessions, runtime, signer, wallet)
    try:
        yield e
    finally:
        await runtime.close()
        server.stop()


@dataclass
class LnEnv(Env):
    network: Any = None
    lnd: Any = None

    async def wallet_for(self, email: str) -> Wallet:
        async with self.sessions() as s, s.begin():
            user = await acc.create_user(s, email=email)
            return await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)


@pytest.fixture
async def lnenv(sessions, db_url, tmp_path, settings_overrides) -> AsyncIterator[LnEnv]:
    """The on-chain environment plus a simulated Lightning network whose "platform" node is
    reached through the `lnd` adapter over LND's REST API."""
    from satvault.backends.lnd import LndBackend
    from satvault.simnet.ln.lnd_rest import LndRestServer
    from satvault.simnet.ln.network import LnNetwork

    chain = Chain()
    server = SimnetServer(chain, port=0, user="u", password="p").start()
    network = LnNetwork()
    lnd = LndRestServer(network, node="platform").start()
    overrides = {"ln_pay_timeout_seconds": 1, "ln_retry_base_seconds": 0.0,
                 "lightning_backend": "lnd", "lnd_url": lnd.url, **settings_overrides}
    settings = make_settings(db_url, tmp_path, server.url, **overrides)
    signer = InProcessSigner(HotSigner(SEED, "regtest",
                                       cold_descriptor=settings.cold_descriptor or None))
    async with sessions() as s, s.begin():
        await register_signer_wallets(s, signer, settings)
        user = await acc.create_user(s, email="alice@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
    runtime = Runtime.build(settings, sessions,
                            backend=BitcoindBackend(server.url, retries=1, backoff=0.01),
                            signer=signer, lightning=LndBackend(lnd.url))
    e = LnEnv(chain, server, settings, sessions, runtime, signer, wallet, network, lnd)
    try:
        yield e
    finally:
        await runtime.close()
        lnd.stop()
        server.stop()


@asynccontextmanager
async def api_client(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app over ASGI (lifespan included) with this environment's runtime."""
    from satvault.web.app import create_app

    app = create_app(env.settings, engine=env.sessions.kw["bind"], start_workers=False,
                     runtime=env.runtime)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c
