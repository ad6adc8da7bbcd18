"""``satvault risk cases …`` in-process: list, show, assign, investigate, note, attach, close
(returning the held money) and sar (draft, narrative, filing, PDF); refusals exit 1 with
the reason."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from satvault.accounts import service as acc
from satvault.cli import app
from satvault.config import reset_settings_cache
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from tests.chainenv import Env
from tests.risk.test_case_races import held_withdrawals

SAT = 1000


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"withdrawal_daily_limit_msat": 10**15}


async def test_the_case_commands(env: Env, db_url, tmp_path, monkeypatch):
    [(wid, case_id)] = await held_withdrawals(env, 1, investigate=False)
    async with env.sessions() as s, s.begin():
        await acc.create_user(s, email="ann@example.com", is_admin=True)
        bob = await acc.create_user(s, email="bob@example.com", is_admin=True)
        await acc.create_user(s, email="eve@example.com")
    available = (await env.balances())["available"]
    for name, value in (("SATVAULT_DATABASE_URL", db_url), ("SATVAULT_HOME", str(tmp_path)),
                        ("SATVAULT_NETWORK", "regtest"), ("SATVAULT_RATE_SOURCES", "fixed")):
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    runner = CliRunner()

    async def sv(*args: str, code: int = 0) -> dict:
        r = await asyncio.to_thread(runner.invoke, app, ["risk", "cases", *args])
        assert r.exit_code == code, r.output
        return json.loads(r.stdout.splitlines()[-1])

    try:
        listed = await sv("list", "--status", "pending")
        assert [c["id"] for c in listed["cases"]] == [case_id]
        assert (await sv("investigate", case_id, "--as", "ann@example.com"))["status"] == \
            "investigating"
        assert (await sv("assign", case_id, "--to", "bob@example.com", "--as",
                         "ann@example.com"))["assignee"] == bob.id
        refused = await sv("assign", case_id, "--to", "eve@example.com", "--as",
                           "ann@example.com", code=1)
        assert "not an admin" in refused["error"]
        await sv("note", case_id, "payee unknown to the customer", "--as", "bob@example.com")
        await sv("attach", case_id, "--uri", "file:///evidence/statement.pdf",
                 "--sha256", "CD" * 32, "--description", "bank statement",
                 "--as", "bob@example.com")
        bad = await sv("attach", case_id, "--uri", "file:///x", "--sha256", "12",
                       "--as", "bob@example.com", code=1)
        assert "sha256" in bad["error"]
        closed = await sv("close", case_id, "--resolution", "confirmed_risk", "--as",
                          "bob@example.com")
        assert closed["acted"] and closed["money"] == "return"
        assert closed["effect"]["status"] == "cancelled"
        again = await sv("close", case_id, "--resolution", "false_positive", "--as",
                         "bob@example.com", code=1)
        assert "closed already" in again["error"]
        shown = await sv("show", case_id)  # (its SAR is shown once drafted)
        [attached] = [e for e in shown["events"] if e["kind"] == "attachment"]
        assert shown["status"] == "closed" and attached["sha256"] == "cd" * 32
        pdf = tmp_path / "sar.pdf"
        sar = await sv("sar", case_id, "--as", "ann@example.com", "--narrative",
                       "Structured payments to an unknown payee.", "--file-reference",
                       "FIU-2026-1", "--pdf", str(pdf))
        assert sar["status"] == "filed" and sar["filed_reference"] == "FIU-2026-1"
        assert sar["what"]["resolution"] == "confirmed_risk"
        assert sar["amount"]["fiat"]["minor"] == 600  # 10,000 sat at 60,000 USD/BTC
        assert pdf.read_bytes().startswith(b"%PDF-")
    finally:
        reset_settings_cache()
    async with env.sessions() as s:
        assert (await s.get(Withdrawal, wid)).status == WithdrawalStatus.CANCELLED
    assert (await env.balances())["available"] > available  # the hold is the wallet's again
    await env.check()
