"""A platform with a single KYC tier (every owner at tier 0, no upgrades offered) pays out:
found from outside, the payout job's and the payer's pick-up built a SQL ``CASE`` with no
``WHEN`` for it, and every pass failed (``near "ELSE": syntax error``), so no withdrawal ever
left."""

from __future__ import annotations

import pytest

from tests.chainenv import LnEnv, api_client
from tests.kyc.helpers import RAILS, SAT, bench
from tests.payouts.test_payouts import add_coin

ONE_TIER = {0: {r: [100_000 * SAT, 200_000 * SAT, 1_000_000 * SAT] for r in RAILS}}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"kyc_tier_limits_msat": ONE_TIER, "rate_limit_create": "10000/second"}


async def test_withdrawals_leave_on_a_platform_with_one_tier(lnenv: LnEnv):
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        await add_coin(env, 200_000)
        ids = {}
        for rail in ("onchain", "lightning"):
            r = await k.pay(rail, 50_000)
            assert r.status_code == 201 and r.json()["status"] == "pending", r.text
            ids[rail] = r.json()["id"]
        too_big = await k.pay("lightning", 150_000)  # the one tier's per-transaction limit
        assert too_big.status_code == 422, too_big.text
        assert await env.runtime.payouts.create_batch() == 1
        assert (await env.runtime.payer.step()).succeeded == 1
        for rail, expected in (("onchain", "batched"), ("lightning", "confirmed")):
            r = await c.get(f"/api/v1/withdrawals/{ids[rail]}", headers=k.payer)
            assert r.json()["status"] == expected, (rail, r.text)
