"""SIGKILL a real payout process mid-flight (while the signer signs, and after signing while
broadcasting); after a restart exactly one transaction pays the withdrawal, and nothing is
refunded or paid twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.chainenv import SEED, Env
from tests.payouts.test_payouts import (
    PAYOUT_BATCHES,
    PAYOUT_VERSIONS,
    PAYOUTS,
    external_address,
    fund,
    received,
    withdraw,
)
from tests.waiting import wait_until

CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from satvault.config import Settings
    from satvault.composition import Runtime, open_sessions
    from satvault.db import create_engine
    from satvault.signer.core import HotSigner
    from satvault.signer.inprocess import InProcessSigner

    db_url, rpc_url, home, where, flag, seed = sys.argv[1:7]
    cold = sys.argv[7] if len(sys.argv) > 7 else ""  # a cold wallet the signer sweeps into

    class Stall(InProcessSigner):
        async def sign_payout(self, *a, **kw):
            if where == "sign":
                Path(flag).write_text("signing")
                await asyncio.Event().wait()  # the parent kills us here
            return await super().sign_payout(*a, **kw)

    async def main():
        # The parent's tier limits: the payout job sends only what the owner's tier allows.
        from tests.chainenv import UNLIMITED_TIERS
        settings = Settings(database_url=db_url, home=home, network="regtest",
                            chain_backend="bitcoind", bitcoind_url=rpc_url,
                            cold_descriptor=cold, kyc_tier_limits_msat=UNLIMITED_TIERS)
        engine = create_engine(db_url, pool_size=2)
        rt = Runtime.build(settings, open_sessions(engine), lightning=None,
                           signer=Stall(HotSigner(bytes.fromhex(seed), "regtest",
                                                  cold_descriptor=cold or None)))
        if where == "broadcast":
            async def stall(raw):
                Path(flag).write_text("signed, about to broadcast")
                await asyncio.Event().wait()  # the parent kills us here
            rt.payouts.backend.broadcast = stall
        await rt.payouts.step()

    asyncio.run(main())
""")


@pytest.mark.parametrize("where", ["sign", "broadcast"])
async def test_sigkill_mid_payout_then_restart_pays_once(env: Env, db_url, tmp_path, where):
    await fund(env, 400_000)
    dest = external_address(env, 5)
    await withdraw(env, dest, 123_000)
    flag = tmp_path / "flag"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, env.server.url, str(tmp_path), where, str(flag),
         SEED.hex()], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        wait_until(lambda: flag.exists() or child.poll() is not None, timeout=60)
        assert child.poll() is None, "the payout process died on its own"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    assert batch.status == ("signing" if where == "sign" else "signed")
    restarted = env.new_runtime()
    try:
        await restarted.payouts.step()
        env.chain.mine(1)
        await restarted.watcher.step()
        await restarted.payouts.step()
    finally:
        await restarted.close()
    assert await received(env, dest) == 123_000
    async with env.sessions() as s:
        assert (await s.execute(PAYOUT_BATCHES)).scalar() == 1
        assert (await s.execute(PAYOUT_VERSIONS)).scalar() == 1
    assert (await env.balances())["held"] == 0
    await env.check()
