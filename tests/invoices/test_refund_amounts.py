"""How much a refund without an amount sends: what is left of what the invoice received
after its earlier refunds (found from outside: it was everything the invoice received, so
after a partial refund such a refund to an LNURL, a Lightning Address or an amountless BOLT11
was refused), and a clear refusal once nothing is left."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit_one
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import paid_lightning_invoice, refunder_key, shop  # noqa: F401
from tests.invoices.test_refund_claims import SlowLnurl

SAT = 1000


@pytest.fixture
def lnurl(lnenv: LnEnv) -> Iterator[SlowLnurl]:
    """An LNURL-pay service that answers at once (it holds no callback)."""
    server = SlowLnurl(lnenv, hold=0)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


async def fund_merchant(env: LnEnv, shop) -> None:  # noqa: F811
    """Money of the merchant's besides the invoice's (the platform fee and the routing fees
    would otherwise leave less than the invoice received)."""
    async with env.sessions() as s, s.begin():
        equity = (await ensure_platform_accounts(s, "BTC")).equity.id
    await submit_one(env.sessions, TransferSpec("fund:shop", equity,
                                                shop["wallet"].ledger_account_id,
                                                100_000 * SAT, "BTC"))


async def test_a_refund_without_an_amount_sends_what_is_left(lnenv: LnEnv, lnurl: SlowLnurl,
                                                             shop):  # noqa: F811
    env = lnenv
    await fund_merchant(env, shop)
    refunder = await refunder_key(env, shop)
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "left", sats=30_000)
        url = f"/api/v1/invoices/{inv['id']}/refunds"

        async def refund(key: str, destination: str):
            return await c.post(url, headers={**refunder, "Idempotency-Key": key},
                                json={"destination": destination})

        first = await c.post(url, headers={**refunder, "Idempotency-Key": "part"},
                             json={"destination": lnurl.destination,
                                   "amount_msat": 10_000 * SAT})
        assert first.status_code == 201, first.text
        rest = await refund("rest", lnurl.destination)
        assert rest.status_code == 201, rest.text
        assert rest.json()["amount_msat"] == 20_000 * SAT
        none_left = await refund("none", env.network.create_invoice("customer2").bolt11)
        assert none_left.status_code == 422, none_left.text
        assert none_left.json()["detail"] == (
            "nothing is left to refund: refunds of this invoice already add up to what it "
            "received (30000000 msat)")
        await env.runtime.payer.step()
    await env.check()


async def test_an_invoice_that_received_nothing_says_so(lnenv: LnEnv, shop):  # noqa: F811
    """Found from outside: refunding an invoice nobody paid said "refunds of this invoice
    already add up to what it received (0 msat)"."""
    from tests.invoices.test_invoices import create

    env = lnenv
    refunder = await refunder_key(env, shop)
    async with api_client(env) as c:
        inv = (await create(c, shop, "unpaid", amount="1000", currency="SATS")).json()
        for body in ({"destination": env.network.create_invoice("customer2", 500 * SAT).bolt11},
                     {"destination": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
                      "amount_msat": 500 * SAT}):
            r = await c.post(f"/api/v1/invoices/{inv['id']}/refunds", json=body,
                             headers={**refunder, "Idempotency-Key": str(len(body))})
            assert r.status_code == 422, r.text
            assert r.json()["detail"] == ("this invoice has received no payment: there is "
                                          "nothing to refund"), r.text
    await env.check()


async def test_an_amountless_bolt11_is_refunded_what_is_left(lnenv: LnEnv,
                                                             shop):  # noqa: F811
    env = lnenv
    await fund_merchant(env, shop)
    refunder = await refunder_key(env, shop)
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "amountless", sats=30_000)
        url = f"/api/v1/invoices/{inv['id']}/refunds"
        part = await c.post(url, headers={**refunder, "Idempotency-Key": "part"}, json={
            "destination": env.network.create_invoice("customer2", 12_000 * SAT).bolt11})
        assert part.status_code == 201, part.text
        rest = await c.post(url, headers={**refunder, "Idempotency-Key": "rest"}, json={
            "destination": env.network.create_invoice("customer2").bolt11})
        assert rest.status_code == 201, rest.text
        assert rest.json()["amount_msat"] == 18_000 * SAT
        await env.runtime.payer.step()
    await env.check()


async def test_a_payment_uri_with_an_amount_is_refunded_that_amount(lnenv: LnEnv,
                                                                    shop):  # noqa: F811
    """Found from outside: a refund to ``bitcoin:ADDR?amount=…`` without ``amount_msat`` was
    refused ("amount_msat differs from the amount in the payment URI": the refund had chosen
    what is left). The URI's amount decides, as a BOLT11's does, within what is left."""
    env = lnenv
    await fund_merchant(env, shop)
    refunder = await refunder_key(env, shop)
    address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "uri", sats=30_000)
        url = f"/api/v1/invoices/{inv['id']}/refunds"
        r = await c.post(url, headers={**refunder, "Idempotency-Key": "refund-uri"},
                         json={"destination": f"bitcoin:{address}?amount=0.00012000"})
        assert r.status_code == 201, r.text
        assert r.json()["amount_msat"] == 12_000 * SAT
        over = await c.post(url, headers={**refunder, "Idempotency-Key": "refund-over"},
                            json={"destination": f"bitcoin:{address}?amount=0.00030000"})
        assert over.status_code == 422, over.text  # 18,000 sat are left
    await env.check()
