"""Several instances (issue 13 §4), end to end: two real ``satvault serve`` processes on one
PostgreSQL database and one simulated chain. The leader is stopped (SIGSTOP) while a deposit
is being credited and killed (SIGKILL) while a withdrawal is being paid; each time the other
process takes the lease over within the lease time and finishes the work, the deposit is
credited once, the withdrawal paid by one transaction, the stopped leader writes nothing
once resumed, and the reconciliation finds no difference.

PostgreSQL only (SQLite is one process by construction): runs where
``SATVAULT_TEST_POSTGRES_URL`` is set, as in CI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.composition import reconcile_now
from satvault.ledger.check import check_ledger
from satvault.ledger.store import get_account
from satvault.onchain.addresses import parse_address
from satvault.onchain.deposits import create_deposit
from satvault.payouts.models import BatchStatus, MoveKind, PayoutBatch, Withdrawal
from satvault.payouts.service import request_withdrawal
from satvault.simnet.chain import Chain
from satvault.simnet.rpc import SimnetServer
from tests.chainenv import UNLIMITED_TIERS, make_settings
from tests.conftest import PG_URL
from tests.test_cli import sv_here

pytestmark = [
    pytest.mark.slow,  # run first: see tests/conftest.py
    pytest.mark.skipif(not PG_URL, reason="PostgreSQL only: set SATVAULT_TEST_POSTGRES_URL"),
    pytest.mark.parametrize("db_url", ["postgres"], indirect=True),
]

SAT = 1000
TTL = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll ``check`` until true; returns the seconds it took."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, f"timed out: {what}"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


class Instance:
    def __init__(self, name: str, env: dict[str, str], home: Path) -> None:
        self.name, self.port = name, _free_port()
        self.log = home / f"serve-{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "satvault.cli", "serve", "--port", str(self.port)],
                env={**env, "SATVAULT_INSTANCE_ID": name}, stdout=subprocess.DEVNULL,
                stderr=out, start_new_session=True)

    def up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def end(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


async def test_two_instances_fail_over_without_paying_or_crediting_twice(
        db_url, sessions, tmp_path):
    chain = Chain()
    server = SimnetServer(chain, port=0, user="u", password="p").start()
    settings = make_settings(db_url, tmp_path, server.url, sweep_min_sat=0,
                             sweep_min_confirmations=1, min_feerate_sat_vb=1,
                             lightning_backend="none")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
           "SATVAULT_HOME": str(tmp_path), "SATVAULT_DATABASE_URL": db_url,
           "SATVAULT_NETWORK": "regtest", "SATVAULT_CHAIN_BACKEND": "bitcoind",
           "SATVAULT_BITCOIND_URL": server.url, "SATVAULT_LIGHTNING_BACKEND": "none",
           "SATVAULT_DEPOSIT_CONFIRMATIONS": "1", "SATVAULT_PAYOUT_CONFIRMATIONS": "1",
           "SATVAULT_SWEEP_MIN_SAT": "0", "SATVAULT_SWEEP_MIN_CONFIRMATIONS": "1",
           "SATVAULT_MIN_FEERATE_SAT_VB": "1", "SATVAULT_WITHDRAWAL_FEE_RESERVE_SAT": "5000",
           "SATVAULT_KYC_TIER_LIMITS_MSAT": json.dumps(UNLIMITED_TIERS),
           "SATVAULT_WATCHER_INTERVAL": "0.2", "SATVAULT_PAYOUT_INTERVAL": "0.3",
           "SATVAULT_CUSTODY_INTERVAL": "0.3", "SATVAULT_WORKER_LEASE_SECONDS": str(TTL),
           "SATVAULT_RATE_LIMIT_ENABLED": "false"}
    env.pop("SATVAULT_CONFIG", None)
    sv_here("init", url=db_url, home=tmp_path, env={k: v for k, v in env.items()
                                                    if k.startswith("SATVAULT_")})
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="alice@example.com")
        wallet: Wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
        deposit = await create_deposit(s, wallet=wallet, settings=settings)

    async def holder() -> tuple[str, int] | None:
        async with sessions() as s:
            r = (await s.execute(text("SELECT holder, epoch FROM worker_leases"))).first()
        return (r.holder, int(r.epoch)) if r is not None else None

    async def available() -> int:
        async with sessions() as s:
            b = (await get_account(s, wallet.ledger_account_id)).balances
        return int(b.credits_posted - b.debits_posted - b.debits_pending)

    async def batches(kind: MoveKind, status: BatchStatus) -> int:
        async with sessions() as s:
            return int((await s.execute(select(func.count()).select_from(PayoutBatch).where(
                PayoutBatch.kind == kind, PayoutBatch.status == status))).scalar_one())

    instances: dict[str, Instance] = {}
    try:
        instances["a"] = Instance("a", env, tmp_path)
        await until(lambda: asyncio.to_thread(instances["a"].up), 60, "a comes up")
        await until(lambda: _eq(holder(), ("a", 1)), 10, "a leads")
        instances["b"] = Instance("b", env, tmp_path)
        await until(lambda: asyncio.to_thread(instances["b"].up), 60, "b comes up")
        assert await holder() == ("a", 1)  # b waits on standby

        # 1. the leader stops while the deposit is being credited
        chain.pay(deposit.address, 300_000)
        chain.mine(1)
        await asyncio.sleep(0.15)  # the watcher (0.2 s) is at it
        instances["a"].signal(signal.SIGSTOP)
        took = await until(lambda: _eq(holder(), ("b", 2)), 3 * TTL, "b takes over")
        assert took < 2 * TTL + 1  # the lease, at worst plus a transaction cut at the lease time
        await until(lambda: _eq(available(), 300_000 * SAT), 10, "the deposit is credited")
        instances["a"].signal(signal.SIGCONT)  # a resumes: it finds the lease lost, writes nothing
        await until(lambda: _contains(instances["a"].log, "lease_lost"), 10, "a steps down")
        assert await holder() == ("b", 2)

        # the deposit swept to the wallet that pays withdrawals (b's custody and payout jobs)
        async def swept() -> bool:
            chain.mine(1)
            return await batches(MoveKind.SWEEP, BatchStatus.CONFIRMED) >= 1
        await until(swept, 30, "the sweep confirms")

        # 2. the leader is killed while the withdrawal is being paid
        dest = _external_address()
        async with sessions() as s, s.begin():
            w = await request_withdrawal(s, wallet=wallet, destination=dest,
                                         amount_msat=100_000 * SAT, settings=settings)
        await until(lambda: _not_eq(withdrawal_status(sessions, w.id), "pending"), 10,
                    "b takes the withdrawal")
        instances["b"].signal(signal.SIGKILL)
        await until(lambda: _eq(holder(), ("a", 3)), 3 * TTL, "a takes over again")

        async def paid() -> bool:
            chain.mine(1)
            return await withdrawal_status(sessions, w.id) == "confirmed"
        await until(paid, 30, "the withdrawal confirms")
        chain.mine(1)
        assert _paid_to(chain, dest) == [100_000]  # one transaction, in the chain once

        assert await available() < 200_000 * SAT  # the withdrawal and its fee, once
        async with sessions() as s:
            assert (await check_ledger(s)).ok
        # clean once the leader's watcher has seen the last block (a difference from money
        # moved twice would never clear)
        deadline = time.monotonic() + 15
        while not (report := await reconcile_now(settings, sessions)).ok:
            assert time.monotonic() < deadline, report.as_dict()
            await asyncio.sleep(0.3)
    except AssertionError as exc:  # say where each process was
        tails = "\n".join(f"--- {i.name}: {i.log.read_text(errors='replace')[-2500:]}"
                          for i in instances.values())
        async with sessions() as s:
            activity = (await s.execute(text(
                "SELECT pid, state, now() - state_change AS idle, wait_event_type, "
                "left(query, 120) AS query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))).all()
        raise AssertionError(f"{exc}\nlease: {await holder()}\n"
                             + "\n".join(map(str, activity)) + f"\n{tails}") from exc
    finally:
        for inst in instances.values():
            inst.end()
        server.stop()


async def _eq(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _not_eq(value: Awaitable[object], other: object) -> bool:
    return await value != other


async def _contains(path: Path, needle: str) -> bool:
    return needle in path.read_text(errors="replace")


async def withdrawal_status(sessions, withdrawal_id) -> str:
    async with sessions() as s:
        return str((await s.execute(select(Withdrawal.status).where(
            Withdrawal.id == withdrawal_id))).scalar_one())


def _external_address() -> str:
    from satvault.onchain.descriptors import parse_wallet
    from satvault.signer.core import HotSigner

    other = HotSigner(bytes([9]) * 64, "regtest")
    return parse_wallet(other.descriptors()["deposit"], "regtest").derive(0).address


def _paid_to(chain: Chain, address: str) -> list[int]:
    """The values of every output paying ``address`` in the active chain."""
    spk = parse_address(address, "regtest").script_pubkey
    values = []
    for height in range(chain.height + 1):
        block = chain.block_at(height)
        assert block is not None
        for tx in block.txs:
            values += [o.value for o in tx.tx.vout if o.script_pubkey.data == spk]
    return values
