"""Refunds an outside review found refused or answered with a 500 (stop 32): a refund with
no amount to an address after a payment in msat (a fiat invoice paid over Lightning), and a
refund to an LNURL whose host cannot be encoded."""

from __future__ import annotations

import pytest

from satvault.accounts import service as acc
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import (  # noqa: F401
    create,
    paid_lightning_invoice,
    refunder_key,
    settle_all,
    shop,
)
from tests.invoices.test_refund_amounts import fund_merchant
from tests.web.rows import row_counts

DEST = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"


async def test_a_refund_without_amount_to_an_address_sends_the_whole_sats_left(
        lnenv: LnEnv, shop):  # noqa: F811
    """12.50 USD paid over Lightning is 20,833,334 msat; the chain carries whole satoshis,
    so the refund of what is left sends 20,833,000 (it was refused: not whole satoshis)."""
    env = lnenv
    await fund_merchant(env, shop)
    refunder = await refunder_key(env, shop)
    async with api_client(env) as c:
        inv = (await create(c, shop, "usd", amount="12.50", currency="USD",
                            payment_methods=["lightning"])).json()
        assert inv["amount_msat"] == 20_833_334
        env.network.pay("customer1", inv["payment_methods"]["lightning"]["bolt11"])
        await settle_all(env)
        r = await c.post(f"/api/v1/invoices/{inv['id']}/refunds",
                         headers={**refunder, "Idempotency-Key": "rest"},
                         json={"destination": DEST})
        assert r.status_code == 201, r.text
        assert r.json()["amount_msat"] == 20_833_000
        r = await c.post(f"/api/v1/invoices/{inv['id']}/refunds",
                         headers={**refunder, "Idempotency-Key": "rest-again"},
                         json={"destination": DEST})  # 334 msat left: nothing to send
        assert r.status_code == 422, r.text
    await env.check()


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"environment": "production"}


@pytest.mark.parametrize("destination", ["lnurlp://a..example.com/pay",
                                         "lnurlp://.example.com/pay",
                                         "a@" + "b" * 64 + ".example.com"])
async def test_a_refund_to_an_lnurl_host_that_cannot_be_encoded_is_a_422(
        lnenv: LnEnv, shop, destination):  # noqa: F811
    env = lnenv
    await fund_merchant(env, shop)
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=shop["store"], scopes=[
            "invoices:read", "invoices:write", "withdrawals:write"])
    key = {"Authorization": f"Bearer {token}"}
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "paid", sats=10_000)
        before = await row_counts(env.sessions)
        r = await c.post(f"/api/v1/invoices/{inv['id']}/refunds",
                         headers={**key, "Idempotency-Key": "r1"},
                         json={"destination": destination, "amount_msat": 1_000_000})
        assert r.status_code == 422 and r.json()["type"].endswith("/lnurl-error"), r.text
        after = await row_counts(env.sessions)
        # Nothing but the key, which keeps the refusal for its replays.
        assert {**after, "idempotency_keys": 0} == {**before, "idempotency_keys": 0}
    await env.check()
