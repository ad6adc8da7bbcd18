"""``satvault signer init | descriptors | serve | refusals``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from embit import bip39
from typer.testing import CliRunner

from satvault.onchain.descriptors import parse_wallet
from satvault.signer.cli import app
from satvault.signing import UnixSocketSigner
from satvault.signing.errors import LimitExceeded, SignerUnavailable
from tests.signer.conftest import Builder, cold_descriptor
from tests.waiting import eventually

ENV = {"SATVAULT_SIGNER_PASSPHRASE": "cli passphrase"}


def test_init_then_descriptors(tmp_path: Path) -> None:
    runner = CliRunner()
    seed = tmp_path / "seed.json"
    result = runner.invoke(app, ["init", "--seed-file", str(seed), "--network", "regtest"],
                           env=ENV)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ok"] and len(out["mnemonic"].split()) == 24
    assert bip39.mnemonic_is_valid(out["mnemonic"])
    assert "WRITE DOWN" in out["warning"] and "WRITE DOWN" in result.stderr
    assert result.stdout.count(out["mnemonic"]) == 1
    for name in ("deposit", "hot"):
        parse_wallet(out["descriptors"][name], "regtest")
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600

    again = runner.invoke(app, ["init", "--seed-file", str(seed), "--network", "regtest"],
                          env=ENV)
    assert again.exit_code == 1 and json.loads(again.stdout)["type"] == "SeedFileExists"

    shown = runner.invoke(app, ["descriptors", "--seed-file", str(seed)], env=ENV)
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["descriptors"] == out["descriptors"]
    assert out["mnemonic"] not in shown.stdout

    wrong = runner.invoke(app, ["descriptors", "--seed-file", str(seed)],
                          env={"SATVAULT_SIGNER_PASSPHRASE": "nope"})
    assert wrong.exit_code == 1 and json.loads(wrong.stdout)["type"] == "WrongPassphrase"

    missing = runner.invoke(app, ["descriptors", "--seed-file", str(seed)],
                            env={"SATVAULT_SIGNER_PASSPHRASE": ""})
    assert missing.exit_code == 1 and json.loads(missing.stdout)["type"] == "NoPassphrase"


def _serve_in_background(seed: Path, sock: Path) -> subprocess.Popen[bytes]:
    """``satvault signer serve`` of ``seed`` on ``sock``, in a process of its own."""
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", "from satvault.signer.cli import app; app()", "serve",
         "--seed-file", str(seed), "--socket", str(sock)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_serve_in_foreground(tmp_path: Path) -> None:
    seed, sock = tmp_path / "seed.json", tmp_path / "signer.sock"
    runner = CliRunner()
    init = runner.invoke(app, ["init", "--seed-file", str(seed), "--network", "regtest"],
                         env=ENV)
    descriptors = json.loads(init.stdout)["descriptors"]
    proc = _serve_in_background(seed, sock)
    try:
        await eventually(lambda: sock.exists() or proc.poll() is not None, timeout=5,
                         message="the signer did not create its socket")
        assert sock.exists(), "the signer did not create its socket"
        # The file appears at bind, a moment before the signer listens: a loaded machine
        # refused the first connection (seen in CI). Ask again within the same deadline.
        got = None
        for _ in range(50):
            try:
                got = await UnixSocketSigner(sock, timeout=2).descriptors()
                break
            except SignerUnavailable:
                await asyncio.sleep(0.1)
        assert got == descriptors
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert not sock.exists()
    audit = tmp_path / "signer-audit.jsonl"  # created at startup, beside the seed file
    assert audit.exists() and stat.S_IMODE(audit.stat().st_mode) == 0o600


def test_serve_refuses_a_bad_cold_descriptor(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    runner = CliRunner()
    init = runner.invoke(app, ["init", "--seed-file", str(seed), "--network", "regtest"],
                         env=ENV)
    hot = json.loads(init.stdout)["descriptors"]["hot"]
    bad = runner.invoke(app, ["serve", "--seed-file", str(seed), "--socket",
                              str(tmp_path / "s.sock"), "--cold-descriptor", hot], env=ENV)
    assert bad.exit_code == 1, bad.output
    out = json.loads(bad.stdout)
    assert out["type"] == "InvalidColdDescriptor" and "wsh(sortedmulti" in out["error"]
    zero = runner.invoke(app, ["serve", "--seed-file", str(seed), "--socket",
                               str(tmp_path / "s.sock"), "--max-tx-sat", "0"], env=ENV)
    assert zero.exit_code != 0 and not (tmp_path / "s.sock").exists()


async def test_serve_enforces_its_caps_and_lists_refusals(tmp_path: Path) -> None:
    seed, sock = tmp_path / "seed.json", tmp_path / "signer.sock"
    runner = CliRunner()
    init = runner.invoke(app, ["init", "--seed-file", str(seed), "--network", "regtest"],
                         env=ENV)
    descriptors = json.loads(init.stdout)["descriptors"]
    cold = cold_descriptor()
    # the per-transaction cap from the environment (the settings' name), the rest as options
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join(sys.path),
           "SATVAULT_SIGNER_MAX_TX_SAT": "12345", "SATVAULT_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from satvault.signer.cli import app; app()", "serve",
         "--seed-file", str(seed), "--socket", str(sock), "--max-daily-sat", "20000",
         "--cold-descriptor", cold],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await eventually(lambda: sock.exists() or proc.poll() is not None, timeout=5,
                         message="the signer did not create its socket")
        assert sock.exists(), "the signer did not create its socket"
        payout = Builder(descriptors).payout()  # 91 000 sat would leave
        with pytest.raises(LimitExceeded, match="per-transaction cap of 12345 sat; 20000 sat"):
            await UnixSocketSigner(sock, timeout=2).sign_payout(
                payout.psbt, payout.payments, max_fee_sat=5_000, max_feerate_sat_vb=50)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert b"caps 12345 sat per transaction, 20000 sat per 24 h" in err
    assert cold.encode() in err
    listed = runner.invoke(app, ["refusals", "--audit-log",
                                 str(tmp_path / "signer-audit.jsonl")])
    (refusal,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert refusal["error_type"] == "LimitExceeded" and refusal["payments"][0]["ref"] == "wd_a"


async def test_one_signer_per_seed_and_audit_log(tmp_path: Path) -> None:
    """Found from outside: a second signer on the same seed, on another socket, started and
    kept a 24-hour window of its own, so twice the daily cap could leave. The seed file and
    the audit log are each held by one signer; the refusal comes before "listening on"."""
    seed = tmp_path / "seed.json"
    runner = CliRunner()
    init = runner.invoke(app, ["init", "--seed-file", str(seed), "--network", "regtest"],
                         env=ENV)
    assert init.exit_code == 0, init.output
    first_sock = tmp_path / "one.sock"
    proc = _serve_in_background(seed, first_sock)
    try:
        await eventually(lambda: first_sock.exists() or proc.poll() is not None, timeout=5,
                         message="the first signer did not start")
        assert proc.poll() is None
        other = tmp_path / "other"
        other.mkdir()
        for args, what in (([], "seed file"),  # same seed, its default audit log
                           (["--audit-log", str(other / "log.jsonl")], "seed file")):
            second = runner.invoke(app, ["serve", "--seed-file", str(seed), "--socket",
                                         str(tmp_path / "two.sock"), *args], env=ENV)
            assert second.exit_code == 1, second.output
            assert f"another signer is running with the {what}" in second.stdout
            assert "(regtest) listening on" not in second.output
            assert not (tmp_path / "two.sock").exists()
        # A copy of the seed elsewhere, with the first one's audit log: refused too.
        copy = other / "seed.json"
        copy.write_bytes(seed.read_bytes())
        second = runner.invoke(app, ["serve", "--seed-file", str(copy), "--socket",
                                     str(tmp_path / "two.sock"), "--audit-log",
                                     str(tmp_path / "signer-audit.jsonl")], env=ENV)
        assert second.exit_code == 1 and "audit log" in second.stdout, second.output
        # Another signer on the first one's socket: refused before it says it listens.
        busy = runner.invoke(app, ["serve", "--seed-file", str(copy), "--socket",
                                   str(first_sock)], env=ENV)
        assert busy.exit_code == 1 and "already listening" in busy.stdout, busy.output
        assert "(regtest) listening on" not in busy.output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=5)
