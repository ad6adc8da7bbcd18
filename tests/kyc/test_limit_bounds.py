"""Limits are amounts the database can compare: above 21 million BTC (the most any limit can
mean) a tier limit or the platform's daily limit is refused when the settings are read; with
one above what SQLite's integers hold, every internal payment of every tier failed with a 500
(the guarded INSERT binds every tier's limits). 21 million BTC itself is the way to say "no
limit", and pays."""

from __future__ import annotations

import pytest

from satvault.config import Settings
from tests.chainenv import LnEnv, api_client
from tests.kyc.helpers import RAILS, bench

ALL_BITCOIN = 21_000_000 * 100_000_000_000
NO_LIMIT = {0: {r: [10**9, 10**10, 10**11] for r in RAILS}, 1: {r: [ALL_BITCOIN] * 3
                                                                for r in RAILS}}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"kyc_tier_limits_msat": NO_LIMIT, "withdrawal_daily_limit_msat": ALL_BITCOIN,
            "rate_limit_create": "10000/second"}


def test_limits_above_all_bitcoin_are_refused_when_read(tmp_path):
    beyond = {0: {r: [10**9, 10**10, 10**11] for r in RAILS}, 1: {r: [10**20] * 3
                                                                   for r in RAILS}}
    with pytest.raises(ValueError, match="21 million BTC"):
        Settings(home=tmp_path, kyc_tier_limits_msat=beyond)
    with pytest.raises(ValueError, match="withdrawal_daily_limit_msat"):
        Settings(home=tmp_path, withdrawal_daily_limit_msat=10**20)


@pytest.mark.parametrize("rail", ["internal", "onchain"])
async def test_all_bitcoin_as_no_limit_pays(lnenv: LnEnv, rail: str):
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        assert (await k.record("approve", 1)).status_code == 201
        r = await k.pay(rail, 1_000)
        assert r.status_code == 201, r.text
