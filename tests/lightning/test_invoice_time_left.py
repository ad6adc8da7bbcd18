"""An outgoing BOLT11 must leave the node time to pay it: one that expires within
``ln_min_invoice_remaining_seconds`` is refused before anything is held (a withdrawal over
the API, a refund), with its own error; an expired one keeps the expired error. One of our own
invoices settles inside the ledger in the unit of work that checks it, so it needs no time
left beyond not being expired."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from satvault.payouts.models import Withdrawal
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import paid_lightning_invoice, refunder_key, shop  # noqa: F401
from tests.lightning.test_api import key_for
from tests.lightning.test_lightning import fund

SAT = 1000


async def _withdrawals(env: LnEnv) -> int:
    async with env.sessions() as s:
        return (await s.execute(select(func.count()).select_from(Withdrawal))).scalar_one()


async def test_an_api_withdrawal_to_an_invoice_about_to_expire_is_refused(lnenv: LnEnv, clock):
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    alice = await key_for(env, env.wallet.owner_id)
    url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
    async with api_client(env) as c:
        soon = env.network.create_invoice("customer2", 10_000 * SAT, expiry=3600).bolt11
        gone = env.network.create_invoice("customer2", 10_000 * SAT, expiry=60).bolt11
        clock.advance(3600 - 20)  # `soon` has 20 s left, `gone` expired an hour ago
        r = await c.post(url, headers={**alice, "Idempotency-Key": "w-soon"},
                         json={"destination": soon})
        assert r.status_code == 422, r.text
        assert r.json()["type"].endswith("/invoice-expires-soon")
        assert re.search(r"expires in 1?\d s; .* at least 60 s", r.json()["detail"]), r.json()
        r = await c.post(url, headers={**alice, "Idempotency-Key": "w-gone"},
                         json={"destination": gone})
        assert r.status_code == 422 and r.json()["type"].endswith("/invoice-expired"), r.text
        assert r.json()["detail"] == "this invoice has expired"
        assert await env.balances() == {"available": 500_000 * SAT, "incoming": 0,
                                        "held": 0, "posted": 500_000 * SAT}
        assert await _withdrawals(env) == 0
        # With the floor lower than the time left, the same invoice is paid.
        env.settings.ln_min_invoice_remaining_seconds = 10
        r = await c.post(url, headers={**alice, "Idempotency-Key": "w-soon-2"},
                         json={"destination": soon})
        assert r.status_code == 201, r.text
    await env.check()


async def test_an_internal_payment_needs_no_time_beyond_its_expiry(lnenv: LnEnv, clock):
    """Our own invoice is settled in the transaction that checks it: a few seconds left are
    enough (nothing routes, nothing can fail later)."""
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    alice = await key_for(env, env.wallet.owner_id)
    bob_wallet = await env.wallet_for("bob@example.com")
    bob = await key_for(env, bob_wallet.owner_id)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{bob_wallet.id}/deposits", headers=bob,
                         json={"method": "lightning", "amount_msat": 50_000 * SAT})
        assert r.status_code == 201, r.text
        bill = r.json()["bolt11"]
        clock.advance(env.settings.ln_invoice_expiry_seconds - 20)
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**alice, "Idempotency-Key": "int-1"},
                         json={"destination": bill})
        assert r.status_code == 201, r.text
        assert r.json()["method"] == "internal" and r.json()["status"] == "confirmed"
    assert (await env.balances(bob_wallet))["available"] == 50_000 * SAT
    await env.check()


async def test_a_refund_to_an_invoice_about_to_expire_is_refused(lnenv: LnEnv,
                                                                 shop, clock):  # noqa: F811
    env = lnenv
    refunder = await refunder_key(env, shop)
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "rf-soon", sats=30_000)
        before = await env.balances(shop["wallet"])
        back = env.network.create_invoice("customer2", 10_000 * SAT, memo="refund").bolt11
        clock.advance(3600 - 30)
        r = await c.post(f"/api/v1/invoices/{inv['id']}/refunds",
                         headers={**refunder, "Idempotency-Key": "r-soon"},
                         json={"destination": back})
        assert r.status_code == 422, r.text
        assert r.json()["type"].endswith("/invoice-expires-soon")
    assert await env.balances(shop["wallet"]) == before
    assert await _withdrawals(env) == 0
    await env.check()
