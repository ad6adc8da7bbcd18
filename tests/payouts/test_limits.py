"""The rolling 24-hour withdrawal limit under a race (issue 9, money 2): concurrent
withdrawals of one wallet, on-chain and Lightning mixed, are counted one after the other, so
exactly floor(limit / amount) get through however many race."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.payouts.models import Withdrawal
from tests.chainenv import LnEnv, api_client
from tests.lightning.test_lightning import fund

SAT = 1000
DEST = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"
AMOUNT = 60_000 * SAT
LIMIT = 200_000 * SAT  # room for three


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"withdrawal_daily_limit_msat": LIMIT, "rate_limit_create": "1000/second"}


async def test_racing_withdrawals_stop_exactly_at_the_daily_limit(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 5_000_000 * SAT)  # the balance is never what stops them
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
    auth = {"Authorization": f"Bearer {token}"}
    bob = await env.wallet_for("bob@example.com")
    n = 24
    async with api_client(env) as c:
        # Lightning: invoices of an outside node, and of another wallet here (internal).
        internal = []
        for _ in range(n // 3):
            async with env.sessions() as s, s.begin():
                from satvault.lightning.invoices import create_invoice
                inv = await create_invoice(s, backend=env.runtime.lightning, wallet=bob,
                                           amount_msat=AMOUNT)
                internal.append(inv.bolt11)
        external = [env.network.create_invoice("customer2", AMOUNT).bolt11
                    for _ in range(n // 3)]
        bodies = ([{"destination": DEST, "amount_msat": AMOUNT}] * (n // 3)
                  + [{"destination": b} for b in external + internal])

        async def one(i: int, body: dict) -> int:
            r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                             headers={**auth, "Idempotency-Key": f"lim-{i}"}, json=body)
            assert r.status_code in (201, 422), r.text
            if r.status_code == 422:
                assert "24-hour withdrawal limit" in r.json()["detail"], r.text
            return r.status_code

        codes = await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    assert codes.count(201) == LIMIT // AMOUNT
    async with env.sessions() as s:
        total = (await s.execute(select(func.sum(Withdrawal.amount_msat)).where(
            Withdrawal.wallet_id == env.wallet.id))).scalar_one()
    assert total == (LIMIT // AMOUNT) * AMOUNT <= LIMIT
    await env.runtime.payer.step()
    await env.check()
