"""The ``satvault`` command, run as a real process against both databases."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from satvault.db import create_engine


def sv(*args: str, url: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "SATVAULT_HOME": str(home), "SATVAULT_DATABASE_URL": url,
           "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("SATVAULT_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "satvault.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sql(url: str, statement: str) -> None:
    async def go() -> None:
        engine = create_engine(url, pool_size=1)
        async with engine.begin() as conn:
            await conn.execute(text(statement))
        await engine.dispose()
    asyncio.run(go())


def test_init_then_manage_accounts_and_check(db_url, tmp_path):
    home = tmp_path / "home"
    first = sv("init", url=db_url, home=home)
    created = last_json(first)
    assert created["api_key"].startswith("sv.") and len(created["password"]) >= 12
    assert "shown ONCE" in first.stderr
    assert created["password"] not in first.stderr
    again = sv("init", url=db_url, home=home, check=False)
    assert again.returncode == 1 and "already initialised" in last_json(again)["error"]
    quiet = sv("init", "--if-needed", url=db_url, home=home)
    assert created["api_key"] not in quiet.stdout + quiet.stderr

    user = last_json(sv("user", "create", "--email", "carol@example.com", url=db_url, home=home))
    assert user["id"].startswith("usr_") and user["wallet_id"].startswith("wal_")
    merchant = last_json(sv("merchant", "create", "--name", "Corner Shop", url=db_url, home=home))
    store = last_json(sv("store", "create", "--merchant", merchant["id"], "--name", "Online",
                         url=db_url, home=home))
    assert store["merchant_id"] == merchant["id"]
    key = last_json(sv("apikey", "create", "--owner", store["id"], "--scopes",
                       "invoices:write,wallet:read", url=db_url, home=home))
    assert key["scopes"] == ["invoices:write", "wallet:read"] and key["api_key"].startswith("sv.")
    bad = sv("apikey", "create", "--owner", store["id"], "--scopes", "root", url=db_url,
             home=home, check=False)
    assert bad.returncode == 1 and "unknown scope" in last_json(bad)["error"]

    ok = sv("ledger", "check", url=db_url, home=home)
    assert last_json(ok)["ok"] is True
    _sql(db_url, "UPDATE ledger_accounts SET credits_posted = 5 WHERE name LIKE 'user:%'")
    broken = sv("ledger", "check", url=db_url, home=home, check=False)
    assert broken.returncode == 1
    report = last_json(broken)
    assert report["ok"] is False
    assert any(r.startswith("ledger_accounts.id=") for p in report["problems"] for r in p["rows"])


def test_serve_refuses_unmigrated_database(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    proc = sv("serve", "--port", "8765", url=url, home=tmp_path, check=False)
    assert proc.returncode == 2
    assert "run `satvault db upgrade`" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_db_upgrade_and_status(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    assert last_json(sv("db", "status", url=url, home=tmp_path))["up_to_date"] is False
    sv("db", "upgrade", url=url, home=tmp_path)
    assert last_json(sv("db", "status", url=url, home=tmp_path))["up_to_date"] is True


def test_demo_prints_json_summary_last(tmp_path):
    proc = sv("demo", url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", home=tmp_path)
    summary = last_json(proc)
    assert summary["ok"] is True and summary["ledger_check"] == "ok"
    assert summary["deposit_status"] == "paid"
    assert summary["payout"] == {"batched": 3, "broadcast": 1, "confirmed": 1}
    assert summary["lightning"]["internal_payment"] == "internal"
    # 35k left from the ledger walkthrough + 250k deposited - 210k withdrawn on-chain - fee,
    # then Lightning: +20k received, -5k to the merchant, -3k paid out - routing fee.
    assert 86_000_000 < summary["customer_available_msat"] < 87_000_000
    assert summary["merchant_available_msat"] == 39_600_000 + 5_000_000
