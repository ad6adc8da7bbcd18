"""``satvault custody status`` and ``custody sweep`` sign nothing, so they open no signer:
found in the known gaps, ``custody sweep`` built the whole runtime, which opened the demo
seed when there was no signer socket (in production, on mainnet and on a test network too,
where the commands that sign refuse it unless given ``--demo-signer``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from satvault.backends.bitcoind import BitcoindBackend
from tests.chainenv import Env
from tests.test_cli import last_json, sv_here


@pytest.mark.parametrize("where", [{"SATVAULT_ENVIRONMENT": "production"},
                                   {"SATVAULT_NETWORK": "testnet"}],
                         ids=["production", "testnet"])
async def test_custody_status_and_sweep_never_open_the_demo_seed(env: Env, db_url,
                                                                 tmp_path: Path, where):
    home = tmp_path / "cli"
    home.mkdir()
    # A demo seed nothing can open: a command that opens it fails on it.
    (home / "signer.json").write_text("{}")
    (home / "signer.passphrase").write_text("correct horse battery")
    network = where.get("SATVAULT_NETWORK", "regtest")
    if network != "regtest":  # a testnet node under a testnet setting
        node = BitcoindBackend(env.server.url, retries=0)
        await node.call("simnet_setchain", "test")
        await node.close()
    settings = {"SATVAULT_CHAIN_BACKEND": "bitcoind", "SATVAULT_BITCOIND_URL": env.server.url,
                "SATVAULT_LIGHTNING_BACKEND": "none", "SATVAULT_SIGNER_SOCKET": "",
                "SATVAULT_SIGNER_PASSPHRASE": None, "SATVAULT_NETWORK": network, **where}
    for args in (("custody", "sweep"), ("custody", "status")):
        done = await asyncio.to_thread(sv_here, *args, url=db_url, home=home, check=False,
                                       env=settings)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert last_json(done)["ok"] is True, done.stdout
        assert "signer" not in done.stdout + done.stderr, (args, done.stdout, done.stderr)
    sweep = last_json(await asyncio.to_thread(sv_here, "custody", "sweep", url=db_url,
                                              home=home, env=settings))
    assert sweep["batch"] is None and sweep["reason"]
