"""Two different drafts approved at the same moment by two admins (found from outside, stop
32): on PostgreSQL the later one waited on the live row's lock, found it retired and nothing
live in its place, and broke the one-live index with a 500. Approvals now run one at a time:
both succeed, the later one live."""
from __future__ import annotations

import asyncio

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


async def test_two_rule_set_drafts_approved_at_once(lnenv: LnEnv):
    sessions = lnenv.sessions
    a, b, c_ = await _admins(sessions, 3)
    codes = []
    async with api_client(lnenv) as c:
        base = "/api/v1/admin/risk/rule-sets"
        await c.get(base, headers=a)
        for i in range(ROUNDS):
            versions = []
            for review in (10, 20):
                doc = default_doc()
                doc["thresholds"]["review"] = review + i
                r = await c.post(base, headers=a, json={"rules": doc})
                versions.append(r.json()["version"])
            r1, r2 = await asyncio.gather(
                c.post(f"{base}/{versions[0]}/approve", headers=b),
                c.post(f"{base}/{versions[1]}/approve", headers=c_))
            codes += [r1.status_code, r2.status_code]
    assert codes == [200] * 2 * ROUNDS, codes
    async with sessions() as s:
        live = (await s.execute(select(RiskRuleSet.version).where(
            RiskRuleSet.status == "live"))).scalars().all()
    assert len(live) == 1


async def test_two_policy_versions_approved_at_once(lnenv: LnEnv):
    sessions = lnenv.sessions
    a, b, c_ = await _admins(sessions, 3)
    codes = []
    async with api_client(lnenv) as c:
        base = "/api/v1/admin/withdrawal-policy"
        for i in range(ROUNDS):
            vs = []
            for amt in (10**9 + i, 2 * 10**9 + i):
                r = await c.post(base, headers=a, json={"rules": [
                    {"name": "cap", "action": "block", "min_amount_msat": amt}]})
                assert r.status_code == 201, r.text
                vs.append(r.json()["version"])
            r1, r2 = await asyncio.gather(c.post(f"{base}/{vs[0]}/approve", headers=b),
                                          c.post(f"{base}/{vs[1]}/approve", headers=c_))
            codes += [r1.status_code, r2.status_code]
    assert codes == [200] * 2 * ROUNDS, codes
    async with sessions() as s:
        live = (await s.execute(select(PolicyVersion.version).where(
            PolicyVersion.status == "live"))).scalars().all()
    assert len(live) == 1
