"""``satvault simnet …`` against a running node: one JSON object per command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from typer.testing import CliRunner

from satvault.simnet import SimnetServer
from satvault.simnet.cli import app, rpc_call

DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def run(node: SimnetServer, *args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, [*args, "--rpc-url", node.url])
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def test_pay_mine_reorg(node: SimnetServer) -> None:
    code, out = run(node, "pay", f"bitcoin:{DEST}?amount=0.0001")
    assert code == 0 and out["ok"] is True
    txid = out["txid"]
    code, out = run(node, "mine", "2")
    assert code == 0 and len(out["blocks"]) == 2
    assert node.chain.find_tx(txid)[1] is not None  # type: ignore[index]
    code, out = run(node, "reorg", "1")
    assert code == 0 and len(out["blocks"]) == 2 and node.chain.height == 113
    code, out = run(node, "balance")
    assert code == 0 and out["spendable_sat"] > 0


def test_errors_are_json(node: SimnetServer) -> None:
    code, out = run(node, "pay", DEST, "1")
    assert code == 1 and out == {"ok": False, "error": "dust", "code": -26}
    result = CliRunner().invoke(app, ["mine", "--rpc-url", "http://u:p@127.0.0.1:9/"])
    assert result.exit_code == 1 and json.loads(result.stdout)["ok"] is False


def test_rpc_url_from_environment(node: SimnetServer) -> None:
    result = CliRunner().invoke(app, ["mine"], env={"SATVAULT_BITCOIND_URL": node.url})
    assert result.exit_code == 0 and node.chain.height == 111


def test_serve_in_the_foreground(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "chain.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
            [sys.executable, "-c", "from satvault.simnet.cli import app; app()", "serve",
             "--port", str(port), "--data", str(data)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            started = json.loads(proc.stdout.readline())
            assert started["ok"] is True and started["port"] == port
            url = f"http://simnet:simnet@127.0.0.1:{port}/"
            assert rpc_call(url, "getblockcount") == 110
            [best] = rpc_call(url, "simnet_mine", [1])
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert proc.returncode == 0
    assert json.loads(data.read_text())["best_block_hash"] == best
