"""Concurrent withdrawals cannot together pass a tier's 24-hour limit: 50 at once, each
within the per-transaction limit, against a 24-hour limit that fits 20 of them."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from satvault.payouts.models import Withdrawal
from tests.chainenv import LnEnv, api_client
from tests.kyc.helpers import OVERRIDES, SAT, bench


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return OVERRIDES


@pytest.mark.parametrize("rail", ["internal", "lightning", "onchain"])
async def test_fifty_concurrent_withdrawals_stop_at_the_tier_24h_limit(lnenv: LnEnv, rail: str):
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        bodies = [await k.destination(rail, 1_000) for _ in range(50)]
        answers = await asyncio.gather(*(k.send(b) for b in bodies))
    codes = [a.status_code for a in answers]
    assert codes.count(201) == 20, (codes, [a.text for a in answers if a.status_code >= 500])
    refused = [a for a in answers if a.status_code != 201]
    # Lost races of one wallet may answer 409 (try again); never a 5xx, never more than 20.
    assert all(a.status_code in (409, 422) for a in refused), [a.text for a in refused]
    assert sum(a.status_code == 422 and a.json()["type"].endswith("/kyc-limit-exceeded")
               for a in refused) >= 1
    async with env.sessions() as s:
        total = (await s.execute(select(func.sum(Withdrawal.amount_msat)).where(
            Withdrawal.wallet_id == env.wallet.id))).scalar_one()
    assert int(total) == 20_000 * SAT
    await env.check()
