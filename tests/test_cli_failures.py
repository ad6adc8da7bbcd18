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


def test_an_argument_that_is_not_utf8_is_said_before_anything_runs(tmp_path):
    """Found from outside: ``--note $'\\xff'`` reached the database as lone surrogates and
    ended in a traceback. Every command refuses it first (exit 2), naming the argument."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "SATVAULT_HOME": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable.encode(), b"-m", b"satvault.cli", b"review",
                           b"resolve", b"1", b"--as", b"admin@example.com", b"--note",
                           b"\xff\xfe bad"], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert b"argument 7 is not valid UTF-8" in proc.stderr and b"Traceback" not in proc.stderr


def test_out_of_range_ids_and_kyc_text_are_clear_errors(db_url, tmp_path):
    home = tmp_path / "home"
    init = last_json(sv_here("init", url=db_url, home=home))
    proc = sv_here("review", "resolve", "99999999999999999999", "--as", init["email"],
                   "--note", "x", url=db_url, home=home, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
    user = last_json(sv_here("user", "create", "--email", "kyc@example.com", url=db_url,
                             home=home))["id"]
    base = ("kyc", "record", user, "--tier", "1", "--decision", "approve", "--reviewer",
            init["email"], "--check", "id-document")
    for extra, said in ((("--name", "B" * 5000, "--document", "p:1"), "at most 200"),
                        (("--name", "Bob", "--document", "p:" + "1" * 400), "at most 300"),
                        (("--name", "Bob", "--document", "p:1\x1b[31m"), "U+001B"),
                        (("--name", "Bob", "--document", "p:1", "--notes", "x\x07"),
                         "U+0007")):
        proc = sv_here(*base, *extra, url=db_url, home=home, check=False)
        assert proc.returncode == 1, (extra, proc.stdout, proc.stderr)
        assert said in last_json(proc)["error"], last_json(proc)
    history = last_json(sv_here("kyc", "history", user, url=db_url, home=home))
    assert history["records"] == [], history


def test_init_that_cannot_finish_creates_nothing(tmp_path):
    """Found from outside: ``init`` with an unreachable signer socket had already created and
    migrated the database, and with a descriptor it could not read had already made a new
    demo seed. Both are checked before anything is written."""
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'satvault.db'}"
    for env, said in (({"SATVAULT_SIGNER_SOCKET": str(tmp_path / "nosuch.sock")},
                       "cannot reach the signer"),
                      ({"SATVAULT_DEPOSIT_DESCRIPTOR": "garbage"}, "deposit descriptor")):
        proc = sv_here("init", "--if-needed", url=url, home=home, env=env, check=False)
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        error = last_json(proc)["error"]
        assert said in error and "nothing was created" in error, error
        assert not home.exists() or not any(home.iterdir()), list(home.iterdir())


def test_serve_and_a_signer_on_its_seed_refuse_each_other(tmp_path):
    """Found from outside: ``satvault serve`` with its in-process signer took no lock, so a
    ``signer serve`` on the same seed and audit log ran beside it, each with a day's cap of
    its own. The serve now holds both, and one started while a signer holds them refuses."""
    import os
    import signal
    import subprocess
    import sys
    import time

    home = tmp_path / "home"
    url = f"sqlite:///{home / 'satvault.db'}"
    sv_here("init", url=url, home=home)
    env = {**os.environ, "SATVAULT_HOME": str(home), "SATVAULT_DATABASE_URL": url,
           "PYTHONPATH": os.pathsep.join(sys.path),
           "SATVAULT_SIGNER_PASSPHRASE_FILE": str(home / "signer.passphrase")}
    env.pop("SATVAULT_CONFIG", None)
    sock = tmp_path / "s.sock"
    signer = subprocess.Popen([sys.executable, "-m", "satvault.cli", "signer", "serve",
                               "--seed-file", str(home / "signer.json"), "--socket", str(sock),
                               "--audit-log", str(home / "signer-audit.jsonl")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and signer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock.exists(), signer.communicate(timeout=5)
        serve = sv("serve", "--port", "1", url=url, home=home, check=False)
        assert serve.returncode == 2, (serve.stdout, serve.stderr[-2000:])
        assert "another signer is running with the seed file" in serve.stderr
    finally:
        signer.send_signal(signal.SIGTERM)
        signer.communicate(timeout=10)
