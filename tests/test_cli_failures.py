"""CLI commands an outside review found answering a failure with a traceback, or changing
state while reporting failure (stop 32): an unreachable database, an output path that
cannot be written (a SAR was filed, then the command said it failed)."""

from __future__ import annotations

import socket

import pytest

from tests.test_cli import last_json, sv, sv_here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("args", [("db", "status"), ("db", "upgrade"),
                                  ("user", "create", "--email", "x@example.com"),
                                  ("ledger", "check")])
def test_unreachable_database_is_one_json_error_not_a_traceback(tmp_path, args):
    """docs/operations.md: every command's failure is exit 1 with {"ok": false, "error"}
    (it was a ~500-line traceback), and the URL's password is in neither."""
    url = f"postgresql+asyncpg://app:s3cret@127.0.0.1:{_free_port()}/satvault"
    proc = sv(*args, url=url, home=tmp_path, check=False)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    answer = last_json(proc)
    assert answer["ok"] is False and "ConnectionRefusedError" in answer["error"], answer
    assert "s3cret" not in proc.stdout + proc.stderr


def test_report_compliance_to_an_unwritable_path_is_one_json_error(db_url, tmp_path):
    home = tmp_path / "home"
    sv_here("init", url=db_url, home=home)
    out = tmp_path / "no-such-dir" / "report.csv"
    proc = sv("report", "compliance", "--from", "2026-01-01", "--to", "2026-01-02",
              "--out", str(out), url=db_url, home=home, check=False)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "cannot write" in last_json(proc)["error"]
