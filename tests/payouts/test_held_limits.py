"""A withdrawal held (for approvers, or for review by the risk rules) and released later:
the rolling 24-hour limit counts what leaves when it leaves. Found from outside: a held
withdrawal counted from the time it was asked for, so one released a day later left beside a
day's worth of others, twice the limit within 24 hours. Now its release is checked against
what the wallet withdrew in the 24 hours before it (refused, the withdrawal still held, when
it would not fit), and once released it counts from its release."""

from __future__ import annotations

import pytest

from satvault.kernel.clock import FakeClock
from satvault.payouts.errors import InvalidWithdrawal, LimitReachedAtRelease
from satvault.payouts.models import WithdrawalStatus
from tests.chainenv import Env, LnEnv, api_client
from tests.payouts.test_payouts import SAT, external_address, fund
from tests.policy.support import make_live, people, request
from tests.policy.test_approvals import TWO_OF_TREASURY, approve, status_of
from tests.risk.conftest import default_doc
from tests.risk.test_cases import admins, case_of
from tests.risk.test_withdrawals import DEST
from tests.risk.test_withdrawals import make_live as make_rules_live

LIMIT = 200_000  # sat, over any 24 hours
SMALL = 40_000  # below the approval rule's and the review rule's threshold


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"withdrawal_daily_limit_msat": LIMIT * SAT,
            "withdrawal_approval_ttl_seconds": 4 * 86400, "rate_limit_create": "1000/second"}


async def test_an_approval_a_day_late_cannot_take_the_wallet_past_its_limit(
        env: Env, clock: FakeClock):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, TWO_OF_TREASURY)
    await fund(env, 1_000_000)
    held = await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                         100_000, initiator=alice)
    assert held.status == WithdrawalStatus.AWAITING_APPROVAL
    await approve(env, held.id, who.bob)
    clock.advance(hours=25)
    # Asked for more than 24 hours ago, the held one no longer counts: others fill the day.
    for i in range(LIMIT // SMALL):
        wd = await request(env.sessions, env.settings, env.wallet,
                           external_address(env, 2 + i), SMALL, initiator=alice)
        assert wd.status == WithdrawalStatus.PENDING
    with pytest.raises(LimitReachedAtRelease, match="24-hour withdrawal limit"):
        await approve(env, held.id, who.carol)
    assert await status_of(env, held.id) == WithdrawalStatus.AWAITING_APPROVAL

    clock.advance(hours=24)  # the others are a day old: room for it
    assert (await approve(env, held.id, who.carol)).released
    assert await status_of(env, held.id) == WithdrawalStatus.PENDING
    clock.advance(hours=1)
    # Released an hour ago, it counts: 100,000 sat of the day are left, not 200,000.
    for i in range(100_000 // SMALL):
        await request(env.sessions, env.settings, env.wallet, external_address(env, 9 + i),
                      SMALL, initiator=alice)
    with pytest.raises(InvalidWithdrawal, match="24-hour withdrawal limit"):
        await request(env.sessions, env.settings, env.wallet, external_address(env, 20),
                      SMALL, initiator=alice)
    await env.check()


async def test_a_case_released_a_day_late_cannot_take_the_wallet_past_its_limit(
        lnenv: LnEnv, clock: FakeClock):
    env = lnenv
    auth, ann, _bob, _ = await admins(env)
    doc = default_doc()
    doc["rules"].append({"id": "big", "score": 60, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "out"},
        {"field": "amount_msat", "op": "gte", "value": 100_000 * SAT}]}})
    await make_rules_live(env, doc)
    await fund(env, 1_000_000)
    url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
    base = "/api/v1/admin/risk/cases"
    async with api_client(env) as c:
        r = await c.post(url, headers={**auth, "Idempotency-Key": "held"},
                         json={"destination": DEST, "amount_msat": 100_000 * SAT})
        assert r.status_code == 201 and r.json()["status"] == "review", r.text
        held = r.json()["id"]
        case = await case_of(env, held)
        await c.post(f"{base}/{case}/investigate", headers=ann, json={})
        clock.advance(hours=25)
        for i in range(LIMIT // SMALL):
            r = await c.post(url, headers={**auth, "Idempotency-Key": f"fill-{i}"},
                             json={"destination": DEST, "amount_msat": SMALL * SAT})
            assert r.status_code == 201 and r.json()["status"] == "pending", r.text
        r = await c.post(f"{base}/{case}/close", headers=ann,
                         json={"resolution": "false_positive"})
        assert r.status_code == 409, r.text
        assert r.json()["type"].endswith("/limit-reached-at-release"), r.text
        assert "24-hour withdrawal limit" in r.json()["detail"]
        shown = (await c.get(f"{base}/{case}", headers=ann)).json()
        assert shown["status"] == "investigating"  # still open, the money still held

        clock.advance(hours=24)
        r = await c.post(f"{base}/{case}/close", headers=ann,
                         json={"resolution": "false_positive"})
        assert r.status_code == 200 and r.json()["effect"]["status"] == "pending", r.text
        clock.advance(hours=1)
        codes = []
        for i in range(100_000 // SMALL + 1):
            r = await c.post(url, headers={**auth, "Idempotency-Key": f"next-{i}"},
                             json={"destination": DEST, "amount_msat": SMALL * SAT})
            codes.append(r.status_code)
        assert codes == [201, 201, 422], codes
    await env.check()
