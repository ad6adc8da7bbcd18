"""SIGKILL a real process in the middle of a sweep (while the signer signs, and after signing
while broadcasting) and of a refill (signed by the cosigners, while broadcasting): after a
restart the move is broadcast once, confirmed and booked once, and the books balance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from satvault.payouts.models import BatchStatus, PayoutBatch, PayoutTx
from tests.chainenv import SEED, Env
from tests.custody.conftest import make_cosigners
from tests.custody.test_cold import embit_sign
from tests.custody.test_refill import REFILL_SETTINGS, fund_cold
from tests.custody.test_sweeps import deposit, tiers
from tests.payouts.test_crash import CHILD
from tests.waiting import wait_until


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(REFILL_SETTINGS)


def kill_mid_move(env: Env, db_url: str, tmp_path, where: str) -> None:
    flag = tmp_path / f"flag-{where}"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, env.server.url, str(tmp_path), where, str(flag),
         SEED.hex(), env.settings.cold_descriptor],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        wait_until(lambda: flag.exists() or child.poll() is not None, timeout=60)
        assert child.poll() is None, "the process died on its own"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()


async def finish_after_restart(env: Env, batch_id: str) -> PayoutBatch:
    restarted = env.new_runtime()
    try:
        await restarted.payouts.advance()
        env.chain.mine(1)
        await restarted.watcher.step()
        await restarted.payouts.advance()
        await restarted.payouts.advance()
    finally:
        await restarted.close()
    async with env.sessions() as s:
        batch = await s.get(PayoutBatch, batch_id)
        versions = (await s.execute(select(func.count()).select_from(PayoutTx).where(
            PayoutTx.batch_id == batch_id))).scalar()
    assert batch is not None and batch.status is BatchStatus.CONFIRMED and versions == 1
    return batch


@pytest.mark.parametrize("where", ["sign", "broadcast"])
async def test_sigkill_mid_sweep_then_restart_moves_and_books_once(env: Env, db_url, tmp_path,
                                                                    where):
    await deposit(env, 800_000)
    decision = await env.runtime.sweeps.step()
    assert decision.batch_id
    kill_mid_move(env, db_url, tmp_path, where)
    async with env.sessions() as s:
        status = (await s.get(PayoutBatch, decision.batch_id)).status  # type: ignore[union-attr]
    assert status == ("signing" if where == "sign" else "signed")
    batch = await finish_after_restart(env, decision.batch_id)
    t = await tiers(env)
    assert t["deposit_wallet"] == 0 and t["network_fees"] == batch.fee_sat
    assert t["hot_wallet"] + t["cold_wallet"] + t["network_fees"] == 800_000
    await env.check()


async def test_sigkill_mid_refill_broadcast_then_restart_moves_and_books_once(
        env: Env, db_url, tmp_path):
    from satvault.custody.cold import ColdWallet, combine, finalize
    from satvault.custody.refill import accept_signed

    await fund_cold(env, 1_000_000)
    decision = await env.runtime.refills.step()
    assert decision.batch_id
    async with env.sessions() as s:
        unsigned = (await s.get(PayoutBatch, decision.batch_id)).psbt  # type: ignore[union-attr]
    a, b, _ = make_cosigners(3)
    wallet = ColdWallet.from_descriptor(env.settings.cold_descriptor, "regtest")
    final = finalize(combine([embit_sign(unsigned, a), embit_sign(unsigned, b)]), wallet)
    async with env.sessions() as s, s.begin():
        assert await accept_signed(s, decision.batch_id, final.raw_hex, final.txid,
                                   final.psbt_b64)
    kill_mid_move(env, db_url, tmp_path, "broadcast")
    batch = await finish_after_restart(env, decision.batch_id)
    assert batch.txid == final.txid
    assert (await tiers(env))["hot_wallet"] == 500_000
    await env.check()
