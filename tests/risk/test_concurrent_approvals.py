"""Two different drafts approved at the same moment by two admins (found from outside, stop
32): on PostgreSQL the later one waited on the live row's lock, found it retired and nothing
live in its place, and broke the one-live index with a 500. Approvals now run one at a time:
the later one ends live. A draft older than the live set is refused (found from outside: approving
it after the newer one undid the newer decision), so the older of the two succeeds only when
its approval runs first."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.risk.models import RiskRuleSet
from satvault.withdrawals.policy.models import PolicyVersion
from tests.auth.test_acting_for_a_merchant import bearer
from tests.chainenv import LnEnv, api_client
from tests.risk.conftest import default_doc

ROUNDS = 8


async def _admins(sessions, n):
    keys = []
    async with sessions() as s, s.begin():
        for i in range(n):
            u = await acc.create_user(s, email=f"adm{i}@example.com", is_admin=True)
            _, k = await acc.create_api_key(s, owner_id=u.id, scopes=["admin"])
            keys.append(bearer(k))
    return keys


def rule_set(i: int) -> dict:
    doc = default_doc()
    doc["thresholds"]["review"] = 10 + i
    return {"rules": doc}


def policy(i: int) -> dict:
    return {"rules": [{"name": "cap", "action": "block", "min_amount_msat": 10**9 + i}]}


@pytest.mark.parametrize(("base", "draft", "model"), [
    ("/api/v1/admin/risk/rule-sets", rule_set, RiskRuleSet),
    ("/api/v1/admin/withdrawal-policy", policy, PolicyVersion)], ids=["rule-sets", "policy"])
async def test_two_drafts_approved_at_once_both_go_live_in_turn(lnenv: LnEnv, base, draft,
                                                                 model):
    a, b, c_ = await _admins(lnenv.sessions, 3)
    codes = []
    async with api_client(lnenv) as c:
        await c.get(base, headers=a)  # the shipped rule set becomes live first
        for i in range(ROUNDS):
            versions = []
            for n in (2 * i, 2 * i + 1):
                r = await c.post(base, headers=a, json=draft(n))
                assert r.status_code == 201, r.text
                versions.append(r.json()["version"])
            r1, r2 = await asyncio.gather(c.post(f"{base}/{versions[0]}/approve", headers=b),
                                          c.post(f"{base}/{versions[1]}/approve", headers=c_))
            assert r2.status_code == 200, r2.text
            assert r1.status_code == 200 or (
                r1.status_code in (409, 422) and "again to replace it" in r1.json()["detail"]
            ), r1.text
            codes += [r1.status_code, r2.status_code]
            async with lnenv.sessions() as s:
                live = (await s.execute(select(model.version).where(model.status == "live"))
                        ).scalars().all()
            assert live == [versions[1]]
    assert 500 not in codes, codes


@pytest.mark.parametrize(("base", "draft"), [
    ("/api/v1/admin/risk/rule-sets", rule_set),
    ("/api/v1/admin/withdrawal-policy", policy)], ids=["rule-sets", "policy"])
async def test_a_draft_older_than_the_live_one_is_not_approved(lnenv: LnEnv, base, draft):
    """Found from outside: draft 4, then draft 5 approved and live; approving 4 afterwards
    made it live and retired 5, a later decision undone unseen."""
    a, b = await _admins(lnenv.sessions, 2)
    async with api_client(lnenv) as c:
        await c.get(base, headers=a)
        older, newer = [(await c.post(base, headers=a, json=draft(n))).json()["version"]
                        for n in (1, 2)]
        assert (await c.post(f"{base}/{newer}/approve", headers=b)).status_code == 200
        r = await c.post(f"{base}/{older}/approve", headers=b)
        assert r.status_code in (409, 422) and "again to replace it" in r.json()["detail"], (
            r.text)
