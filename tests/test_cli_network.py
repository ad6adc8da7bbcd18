"""The commands that act on the chain node outside the service refuse a node of another
network than ``SATVAULT_NETWORK``, as the chain workers do (``NetworkGuard``). Found in the
Known gaps: ``satvault payouts bump`` and the ``satvault custody`` commands did not check the
network at all, so a mistyped URL or port could have a sweep or a fee bump built from, and
sent to, a testnet node under a regtest (or mainnet) configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from satvault.backends.bitcoind import BitcoindBackend
from satvault.signer.seed import create_seed_file
from tests.chainenv import Env
from tests.test_cli import last_json, sv_here

WRONG = "the chain node is on testnet, satvault is configured for regtest"
TXID = "ab" * 32
COMMANDS = [("payouts", "bump", "pob_nosuchbatch", "--feerate", "20"),
            ("payouts", "resolve", "pob_nosuchbatch", "--requeue", "--as", "root@example.com",
             "--note", "n"), ("custody", "sweep"),
            ("custody", "resolve", "swp_nosuchmove", "--abandon", "--as", "root@example.com",
             "--note", "n"),
            ("custody", "status"), ("reconcile", "--shallow"),
            ("audit", "verify-anchor", TXID), ("reserves", "verify", "proof.txt")]


def cli_home(tmp_path: Path) -> Path:
    """A home with the in-process signer's seed file, as ``satvault init`` leaves it."""
    home = tmp_path / "cli"
    home.mkdir()
    (home / "signer.passphrase").write_text("correct horse battery")
    create_seed_file(home / "signer.json", "correct horse battery", network="regtest")
    return home


async def run(env: Env, db_url: str, home: Path, *args: str):
    return await asyncio.to_thread(
        sv_here, *args, url=db_url, home=home, check=False,
        env={"SATVAULT_CHAIN_BACKEND": "bitcoind", "SATVAULT_BITCOIND_URL": env.server.url,
             "SATVAULT_NETWORK": "regtest", "SATVAULT_LIGHTNING_BACKEND": "none",
             "SATVAULT_SIGNER_PASSPHRASE": None, "SATVAULT_SIGNER_SOCKET": None})


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]).strip("-"))
async def test_a_chain_command_refuses_a_node_of_another_network(env: Env, db_url, tmp_path,
                                                                 args):
    home = cli_home(tmp_path)
    args = tuple(str(tmp_path / a) if a == "proof.txt" else a for a in args)
    (tmp_path / "proof.txt").write_text("00")  # not a proof: refused once the node is right
    node = BitcoindBackend(env.server.url, retries=0)
    await node.call("simnet_setchain", "test")  # a testnet3 node behind a regtest setting
    refused = await run(env, db_url, home, *args)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    out = last_json(refused)
    assert out["ok"] is False and out["error"].startswith(WRONG), out
    assert "nothing was done" in out["error"]

    await node.call("simnet_setchain", "regtest")  # the right node: the command runs
    done = await run(env, db_url, home, *args)
    assert WRONG not in done.stdout + done.stderr
    if args[0] in ("custody", "reconcile") and args[1] != "resolve":
        assert done.returncode == 0 and last_json(done)["ok"], (done.stdout, done.stderr)
    else:  # it got as far as what it was given: a batch, a transaction, a proof, not there
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert last_json(done)["ok"] is False
    await node.close()
    await env.check()
