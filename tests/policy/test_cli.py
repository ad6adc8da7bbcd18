"""``satvault policy …`` and ``satvault withdrawals …`` as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

from satvault.accounts import service as acc
from satvault.config import Settings
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit_one
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from tests.policy.support import people, request
from tests.test_cli import last_json, sv_here

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


async def test_policy_and_approvals_from_the_command_line(sessions, db_url, tmp_path: Path):
    settings = Settings(database_url=db_url, home=tmp_path, network="regtest")
    async with sessions() as s, s.begin():
        alice = await acc.create_user(s, email="alice@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=alice.id)
        equity = (await ensure_platform_accounts(s, "BTC")).equity.id
    await submit_one(sessions, TransferSpec("fund", equity, wallet.ledger_account_id,
                                            10**9, "BTC"))
    who = await people(sessions, initiator=alice.id)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"rules": [
        {"name": "all on-chain", "action": "require_approval", "approvals": 1,
         "group": "treasury", "rails": ["onchain"]}]}))

    out = last_json(sv_here("policy", "propose", str(policy), "--as", who.admin1, url=db_url,
                       home=tmp_path))
    assert out["ok"] and out["status"] == "proposed"
    version = str(out["version"])
    refused = sv_here("policy", "approve", version, "--as", who.admin1, url=db_url, home=tmp_path,
                 check=False)
    assert refused.returncode == 1 and "second admin" in last_json(refused)["error"]
    out = last_json(sv_here("policy", "approve", version, "--as", who.admin2, url=db_url,
                       home=tmp_path))
    assert out["status"] == "live" and out["approved_by"] == who.admin2
    shown = last_json(sv_here("policy", "show", url=db_url, home=tmp_path))
    assert [v["status"] for v in shown["versions"]] == ["live"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"action": "sometimes"}]}')
    refused = sv_here("policy", "propose", str(bad), "--as", who.admin1, url=db_url,
                 home=tmp_path, check=False)
    assert refused.returncode == 1 and "action must be" in last_json(refused)["error"]

    wd = await request(sessions, settings, wallet, ADDRESS, 50_000, initiator=alice.id)
    assert wd.status == WithdrawalStatus.AWAITING_APPROVAL
    listed = last_json(sv_here("withdrawals", "awaiting", url=db_url, home=tmp_path))
    assert [w["withdrawal_id"] for w in listed["withdrawals"]] == [wd.id]
    refused = sv_here("withdrawals", "approve", wd.id, "--as", alice.id, url=db_url, home=tmp_path,
                 check=False)
    assert refused.returncode == 1 and "initiator" in last_json(refused)["error"]
    out = last_json(sv_here("withdrawals", "approve", wd.id, "--as", who.bob, url=db_url,
                       home=tmp_path))
    assert out["released"] and out["status"] == "approved"
    async with sessions() as s:
        row = await s.get(Withdrawal, wd.id)
        assert row is not None and row.status == WithdrawalStatus.PENDING
