"""``satvault simnet ln-…`` against a running simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from typer.testing import CliRunner

from satvault.simnet.ln import LndRestServer, LnNetwork
from satvault.simnet.ln.cli import app


def _run(*args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def test_ln_pay_and_ln_invoice(lnd: LndRestServer, net: LnNetwork) -> None:
    inv = net.create_invoice("platform", 30_000, memo="order")
    code, out = _run("ln-pay", inv.bolt11, "--from", "customer2", "--url", lnd.url)
    assert code == 0 and out["ok"] is True
    assert out["status"] == "SUCCEEDED" and out["fee_msat"] == 1030
    code, out = _run("ln-pay", inv.bolt11, "--from", "customer2", "--url", lnd.url)
    assert code == 1 and out["kind"] == "already_paid"
    code, out = _run("ln-invoice", "--amount-msat", "5000", "--memo", "refund",
                     "--url", lnd.url)
    assert code == 0 and str(out["bolt11"]).startswith("lnbcrt50n1")
    assert net.lookup_invoice("customer1", str(out["payment_hash"])) is not None
    anyamount = net.create_invoice("platform", None)
    code, out = _run("ln-pay", anyamount.bolt11, "--amount-msat", "1234", "--url", lnd.url)
    assert code == 0 and out["value_msat"] == 1234 and out["route"] == ["customer1",
                                                                      "platform"]


def test_unreachable_simulator() -> None:
    code, out = _run("ln-invoice", "--amount-msat", "1", "--url", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach" in str(out["error"])


def test_ln_serve_runs_until_terminated() -> None:
    env = {**os.environ, "SATVAULT_LND_URL": ""}
    with subprocess.Popen(
            [sys.executable, "-c", "from satvault.simnet.ln.cli import app; app()",
             "ln-serve", "--port", "0", "--seed", "cli-test"],
            stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            hello = json.loads(proc.stdout.readline())
            assert hello["ok"] is True and hello["network"] == "regtest"
            assert hello["pubkey"] == LnNetwork(seed="cli-test").pubkey("platform")
            code, out = _run("ln-invoice", "--amount-msat", "1000", "--node", "customer2",
                             "--url", hello["url"])
            assert code == 0 and out["node"] == "customer2"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
