"""`satvault signer serve` with a socket path whose directory does not exist (found from
outside, stop 32): it said it was listening, then died with a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from satvault.cli import app

ENV = {"SATVAULT_SIGNER_PASSPHRASE": "cli passphrase", "SATVAULT_CONFIG": None}


def test_serve_on_a_socket_in_a_missing_directory_is_one_clear_error(tmp_path: Path) -> None:
    """One JSON error, exit 1, as every other start-up failure of `signer serve`, and no
    "listening" line."""
    runner = CliRunner()
    seed = tmp_path / "seed.json"
    env = {**ENV, "SATVAULT_HOME": str(tmp_path)}
    made = runner.invoke(app, ["signer", "init", "--seed-file", str(seed), "--network",
                               "regtest"], env=env)
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["signer", "serve", "--seed-file", str(seed), "--socket",
                                 str(tmp_path / "missing" / "signer.sock")], env=env)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["ok"] is False
    assert "listening" not in result.stderr
