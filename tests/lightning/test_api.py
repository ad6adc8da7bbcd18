"""Lightning through the wallet API: BOLT11 deposits with their QR, withdrawals inferred from
the destination (external BOLT11, internal invoice), problem+json for bad invoices."""

from __future__ import annotations

import httpx

from satvault.accounts import service as acc
from satvault.lightning.invoices import InvoiceListener
from satvault.web.app import create_app
from tests.chainenv import LnEnv, api_client
from tests.lightning.test_lightning import fund

SAT = 1000




async def key_for(env: LnEnv, owner_id: str) -> dict[str, str]:
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=owner_id, scopes=[
            "wallet:read", "wallet:write", "withdrawals:write"])
    return {"Authorization": f"Bearer {token}"}


async def test_lightning_deposit_and_withdrawals_over_http(lnenv: LnEnv):
    env = lnenv
    alice = await key_for(env, env.wallet.owner_id)
    bob_wallet = await env.wallet_for("bob@example.com")
    bob = await key_for(env, bob_wallet.owner_id)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/deposits", headers=alice,
                         json={"method": "lightning", "amount_msat": 300_000 * SAT,
                               "description": "top-up"})
        assert r.status_code == 201, r.text
        dep = r.json()
        assert dep["bolt11"].startswith("lnbcrt") and dep["address"] is None
        png = await c.get(dep["qr_png"])
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        env.network.pay("customer1", dep["bolt11"])
        await InvoiceListener(env.sessions, env.runtime.lightning, node="lnd").sweep()
        got = (await c.get(f"/api/v1/deposits/{dep['id']}", headers=alice)).json()
        assert got["status"] == "paid" and got["received_msat"] == 300_000 * SAT
        assert (await c.get(f"/api/v1/deposits/{dep['id']}", headers=bob)).status_code == 404

        external = env.network.create_invoice("customer2", 100_000 * SAT).bolt11
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**alice, "Idempotency-Key": "ln-1"},
                         json={"destination": f"lightning:{external}"})
        assert r.status_code == 201, r.text
        wd = r.json()
        assert wd["method"] == "lightning" and wd["payment_hash"]
        await env.runtime.payer.step()
        done = (await c.get(f"/api/v1/withdrawals/{wd['id']}", headers=alice)).json()
        assert done["status"] == "confirmed" and done["fee_msat"] > 0

        r = await c.post(f"/api/v1/wallets/{bob_wallet.id}/deposits", headers=bob,
                         json={"method": "lightning", "amount_msat": 50_000 * SAT})
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**alice, "Idempotency-Key": "ln-2"},
                         json={"destination": r.json()["bolt11"]})
        assert r.status_code == 201 and r.json()["method"] == "internal"
        assert r.json()["fee_msat"] == 0
        bal = (await c.get(f"/api/v1/wallets/{bob_wallet.id}", headers=bob)).json()
        assert bal["available_msat"] == 50_000 * SAT

        bad = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                           headers={**alice, "Idempotency-Key": "ln-3"},
                           json={"destination": "lnbcrt1qqqqbroken"})
        assert bad.status_code == 422 and bad.json()["title"] == "invalid invoice"
        amountless = env.network.create_invoice("customer2", None).bolt11
        needs = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                             headers={**alice, "Idempotency-Key": "ln-4"},
                             json={"destination": amountless})
        assert needs.status_code == 422 and needs.json()["title"] == "amount required"
    await env.check()


async def test_funded_wallet_cannot_overspend_over_http(lnenv: LnEnv):
    env = lnenv
    alice = await key_for(env, env.wallet.owner_id)
    await fund(env, env.wallet, 10_000 * SAT)
    async with api_client(env) as c:
        big = env.network.create_invoice("customer2", 20_000 * SAT).bolt11
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**alice, "Idempotency-Key": "big"},
                         json={"destination": big})
        assert r.status_code == 422 and r.json()["result"] == "exceeds_credits"
        bal = (await c.get(f"/api/v1/wallets/{env.wallet.id}", headers=alice)).json()
        assert bal["held_msat"] == 0 and bal["available_msat"] == 10_000 * SAT
    await env.check()


async def test_withdraw_to_a_lightning_address_over_http(lnenv: LnEnv):
    """Alice pays bob@<this host>: LUD-16 resolution → LNURL-pay callback → our own invoice →
    settled inside the ledger."""
    env = lnenv
    env.settings.public_url = "http://lnurl.test"
    alice = await key_for(env, env.wallet.owner_id)
    bob_wallet = await env.wallet_for("bob@example.com")
    bob = await key_for(env, bob_wallet.owner_id)
    await fund(env, env.wallet, 50_000 * SAT)
    app = create_app(env.settings, engine=env.sessions.kw["bind"], start_workers=False,
                     runtime=env.runtime)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=transport, base_url="http://lnurl.test") as c:
        app.state.lnurl_http = c
        r = await c.post(f"/api/v1/wallets/{bob_wallet.id}/lightning-address", headers=bob,
                         json={"username": "bob"})
        assert r.status_code == 201 and r.json()["address"] == "bob@lnurl.test"
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**alice, "Idempotency-Key": "addr-1"},
                         json={"destination": "bob@lnurl.test", "amount_msat": 2_000 * SAT})
        assert r.status_code == 201, r.text
        assert r.json()["method"] == "internal" and r.json()["destination"] == "bob@lnurl.test"
        bal = (await c.get(f"/api/v1/wallets/{bob_wallet.id}", headers=bob)).json()
        assert bal["available_msat"] == 2_000 * SAT
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**alice, "Idempotency-Key": "addr-2"},
                         json={"destination": "bob@lnurl.test", "amount_msat": 1})
        assert r.status_code == 422 and r.json()["title"] == "lnurl error"
    await env.check()
