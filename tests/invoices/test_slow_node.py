"""A slow Lightning node holds no database lock (issue 9, money 1b): while the node sits on
a request (a store invoice's BOLT11, the cancellation that precedes an internal payment),
the rest of the platform keeps writing. On SQLite, one open transaction would hold the only
writer and everything would queue behind the node."""

from __future__ import annotations

import asyncio

import httpx

from satvault.accounts import service as acc
from satvault.lightning.invoices import create_invoice
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import create, shop  # noqa: F401
from tests.lightning.test_lightning import fund

SAT = 1000


async def held(env: LnEnv) -> None:
    assert await asyncio.to_thread(env.lnd.held.acquire, True, 10), "the node was never asked"


async def an_unrelated_write_goes_through(env: LnEnv) -> None:
    """Another user's top-up, within 10 s (the node is held for up to 30)."""
    async def write() -> None:
        bob = await env.wallet_for("bob@example.com")
        await fund(env, bob, 1_000 * SAT)
    await asyncio.wait_for(write(), timeout=10)


async def while_the_node_holds(env: LnEnv, method: str, path: str, request) -> httpx.Response:
    """Send ``request`` while the node sits on ``method path``; once the node has it, another
    write must go through; then let the node answer and return the request's response."""
    gate = env.lnd.hold(method, path)
    pending = asyncio.create_task(request)
    try:
        await held(env)
        await an_unrelated_write_goes_through(env)
    finally:
        gate.set()
    return await asyncio.wait_for(pending, timeout=20)


async def test_a_store_invoice_waiting_for_the_node_blocks_nobody(lnenv: LnEnv,
                                                                 shop):  # noqa: F811
    env = lnenv
    async with api_client(env) as c:
        r = await while_the_node_holds(env, "POST", "/v1/invoices", create(
            c, shop, "slow-node", amount="1000", currency="SATS"))
        assert r.status_code == 201, r.text
        assert r.json()["payment_methods"]["lightning"]["bolt11"]
    await env.check()


async def test_an_internal_payment_waiting_for_the_node_blocks_nobody(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 100_000 * SAT)
    carol = await env.wallet_for("carol@example.com")
    async with env.sessions() as s, s.begin():
        bill = await create_invoice(s, backend=env.runtime.lightning, wallet=carol,
                                    amount_msat=20_000 * SAT)
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
    async with api_client(env) as c:
        r = await while_the_node_holds(env, "POST", "/v2/invoices/cancel", c.post(
            f"/api/v1/wallets/{env.wallet.id}/withdrawals",
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "internal"},
            json={"destination": bill.bolt11}))
        assert r.status_code == 201 and r.json()["method"] == "internal", r.text
    assert (await env.balances(carol))["available"] == 20_000 * SAT
    await env.check()
