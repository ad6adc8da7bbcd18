"""``satvault serve --role``: the API replicas and the one workers process of a container
deployment, started as the compose file and the manifests start them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from satvault.cli import app
from satvault.config import reset_settings_cache
from tests.conftest import BACKENDS
from tests.test_cli import _free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow  # run first: see tests/conftest.py


@pytest.mark.parametrize(("args", "message"), [
    (["--role", "api"], "--role api needs PostgreSQL"),
    (["--role", "workers"], "--role workers needs PostgreSQL"),
])
def test_roles_need_postgresql(sqlite_template: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch, args: list[str],
                               message: str) -> None:
    db = tmp_path / "satvault.db"
    db.write_bytes(sqlite_template.read_bytes())
    monkeypatch.setenv("SATVAULT_HOME", str(tmp_path))
    monkeypatch.setenv("SATVAULT_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    reset_settings_cache()
    try:
        result = CliRunner().invoke(app, ["serve", "--port", "9", *args])
    finally:
        reset_settings_cache()
    assert result.exit_code == 2 and message in result.stderr


@pytest.mark.parametrize("db_url", [b for b in BACKENDS if b == "postgres"], indirect=True)
def test_an_api_replica_beside_the_workers_process(db_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A `--role api` server and a `--role workers` one: the API server runs no workers, the
    workers process runs them all, and an invoice made through the API server is settled by
    the workers."""
    api_port, workers_port, btc, lnd = (_free_port() for _ in range(4))
    env = {"SATVAULT_HOME": str(tmp_path), "SATVAULT_DATABASE_URL": db_url,
           "SATVAULT_BITCOIND_URL": f"http://simnet:simnet@127.0.0.1:{btc}/",
           "SATVAULT_LND_URL": f"http://127.0.0.1:{lnd}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SATVAULT_CONFIG", raising=False)
    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> dict:
        reset_settings_cache()
        try:
            done = runner.invoke(app, list(args))
        finally:
            reset_settings_cache()
        assert done.exit_code == code, (done.stdout, done.stderr)
        return json.loads(done.stdout.strip().splitlines()[-1]) if code == 0 else {}

    refused = runner.invoke(app, ["serve", "--role", "workers", "--workers", "2"])
    assert refused.exit_code == 2 and "one process" in refused.stderr
    cli("init")
    merchant = cli("merchant", "create", "--name", "Roles")
    store_id = cli("store", "create", "--merchant", merchant["id"], "--name", "S")["id"]
    key = cli("apikey", "create", "--owner", store_id, "--scopes",
              "invoices:write,invoices:read")["api_key"]
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    with ExitStack() as stack:
        def start(role: str, port: int) -> tuple[subprocess.Popen[bytes], Path]:
            log = tmp_path / f"{role}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "satvault.cli", "serve", "--role", role,
                     "--port", str(port)], env=child_env, stdout=subprocess.DEVNULL,
                    stderr=out)

            def stop() -> None:
                proc.send_signal(2)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            stack.callback(stop)
            return proc, log

        servers = [start("workers", workers_port), start("api", api_port)]

        def health(port: int) -> dict | None:
            for proc, log in servers:
                assert proc.poll() is None, log.read_text()[-2000:]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except httpx.HTTPError:
                return None
            return r.json() if r.status_code == 200 else None

        for port in (workers_port, api_port):
            wait_until(lambda p=port: health(p), timeout=90, interval=0.1,
                       message=f"the server on {port} did not come up")
        assert health(api_port)["workers"] == {}  # type: ignore[index]
        running = health(workers_port)["workers"]  # type: ignore[index]
        assert {"chain-watcher", "payouts", "webhooks"} <= set(running), running

        api = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{api_port}",
                                               timeout=30, headers={"X-Api-Key": key}))
        made = api.post(f"/api/v1/stores/{store_id}/invoices",
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                        json={"amount": "20000", "currency": "SATS"})
        assert made.status_code == 201, made.text
        invoice = made.json()
        cli("simnet", "pay", invoice["payment_methods"]["onchain"]["address"], "20000")
        cli("simnet", "mine", "1")
        wait_until(lambda: api.get(f"/api/v1/invoices/{invoice['id']}").json()["status"]
                   == "settled", timeout=60, interval=0.1)
