"""One external BOLT11 paid from many concurrent requests (issue 9, money 5): exactly one
payment; every other request gets a 409 or 422 problem, never a 500."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.lightning.models import LnPayment
from tests.chainenv import LnEnv, api_client
from tests.lightning.test_lightning import fund

SAT = 1000


async def test_one_bolt11_from_fifty_concurrent_requests_is_paid_once(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 1_000_000 * SAT)
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
    auth = {"Authorization": f"Bearer {token}"}
    bolt11 = env.network.create_invoice("customer2", 10_000 * SAT).bolt11
    async with api_client(env) as c:
        answers = await asyncio.gather(*(
            c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                   headers={**auth, "Idempotency-Key": f"same-{i}"},
                   json={"destination": bolt11}) for i in range(50)))
    codes = [a.status_code for a in answers]
    assert codes.count(201) == 1, [a.text for a in answers if a.status_code >= 500]
    assert all(code in (201, 409, 422) for code in codes), codes
    assert all(a.headers["content-type"] == "application/problem+json"
               for a in answers if a.status_code != 201)
    await env.runtime.payer.step()
    async with env.sessions() as s:
        payments = (await s.execute(select(func.count()).select_from(LnPayment))).scalar_one()
    assert payments == 1
    b = await env.balances()
    assert b["held"] == 0
    assert 1_000_000 * SAT - b["available"] < 10_000 * SAT + 10_000 * SAT
    await env.check()
