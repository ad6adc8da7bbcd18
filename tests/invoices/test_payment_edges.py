"""Money edges of store invoices across both rails: what the payer is asked for after a part
of the invoice was paid."""

from __future__ import annotations

from satvault.backends.errors import BackendUnavailable
from satvault.invoices.tasks import refresh_open_invoices
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import create, refunder_key, settle_all, shop  # noqa: F401

SAT = 1000


async def test_a_remainder_below_one_sat_never_offers_the_full_bolt11(lnenv: LnEnv,
                                                                       shop):  # noqa: F811
    """On-chain pays whole sats: 50,000 sats of a 50,000.5 sat invoice leave 500 msat due.
    No BOLT11 for the rest is made (below 1 sat), and the first BOLT11, for the whole
    amount, must not be offered for it: a unified QR would make the payer pay it all again
    (found from outside: the page asked 50,000.5 sats over Lightning for 500 msat)."""
    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "sub-sat", amount="50000.5", currency="SATS")).json()
        env.chain.pay(inv["payment_methods"]["onchain"]["address"], 50_000)
        env.chain.mine(1)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["due_msat"] == 500 and got["status"] == "new", got
        ln = got["payment_methods"]["lightning"]
        assert ln["amount_msat"] is None or ln["amount_msat"] <= got["due_msat"], got
        assert "lightning=" not in got["payment_methods"]["onchain"]["bip21"].lower()
        page = (await c.get(f"/i/{inv['id']}/status")).json()["destinations"]
        assert page["lightning_amount_msat"] is None, page
    await env.check()


class _NoNewInvoices:
    """The node, refusing to issue invoices (down for that call); everything else passes."""

    def __init__(self, node: object) -> None:
        self._node = node

    def __getattr__(self, name: str) -> object:
        return getattr(self._node, name)

    async def create_invoice(self, *args: object, **kwargs: object) -> object:
        raise BackendUnavailable("node unreachable")


async def test_a_failed_remainder_bolt11_leaves_lightning_off_not_the_full_one(
        lnenv: LnEnv, shop):  # noqa: F811
    """After a partial on-chain payment the node could not issue the BOLT11 for the rest:
    the payer is offered the address for the rest and no Lightning invoice, never the first
    BOLT11 for the whole amount; once the node answers again the rest gets its BOLT11."""
    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "rest-fails", amount="50000", currency="SATS")).json()
        env.chain.pay(inv["payment_methods"]["onchain"]["address"], 20_000)
        env.chain.mine(1)
        await env.runtime.watcher.step()
        await refresh_open_invoices(env.sessions, env.settings,
                                    _NoNewInvoices(env.runtime.lightning))  # type: ignore
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["due_msat"] == 30_000 * SAT, got
        assert got["payment_methods"]["lightning"] == {"bolt11": None, "amount_msat": None}
        assert "lightning=" not in got["payment_methods"]["onchain"]["bip21"].lower()
        page = (await c.get(f"/i/{inv['id']}/status")).json()["destinations"]
        assert page["bolt11"] is None and page["onchain_amount_sat"] == 30_000, page
        assert (await c.get(f"/i/{inv['id']}/qr/lightning.svg")).status_code == 404
        listed = (await c.get(f"/api/v1/stores/{shop['store']}/invoices",
                              headers=shop["read"])).json()["items"]
        assert listed[0]["payment_methods"]["lightning"]["bolt11"] is None
        await settle_all(env)  # the node is back: a BOLT11 for the rest
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        rest = got["payment_methods"]["lightning"]
        assert rest["amount_msat"] == 30_000 * SAT, got
        env.network.pay("customer1", rest["bolt11"])
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert (got["status"], got["paid_msat"]) == ("settled", 50_000 * SAT), got
    await env.check()


async def test_metadata_that_is_not_json_is_refused_not_a_500(lnenv: LnEnv,
                                                              shop):  # noqa: F811
    """Python's JSON reader takes NaN, Infinity and 1e999 (read as infinity), which JSON has
    no room for: such metadata is a 422, and no invoice is made (found from outside: a 500
    once the invoice.created event was written, with an unhandled ValueError)."""
    env = lnenv
    async with api_client(env) as c:
        for i, value in enumerate(("NaN", "Infinity", "-Infinity", "1e999", '[{"x": NaN}]')):
            r = await c.post(
                f"/api/v1/stores/{shop['store']}/invoices",
                headers={**shop["key"], "Idempotency-Key": f"nan-{i}",
                         "Content-Type": "application/json"},
                content=f'{{"amount": "10", "currency": "SATS", "metadata": {{"a": {value}}}}}')
            assert r.status_code == 422, (value, r.status_code, r.text)
            assert "metadata" in r.json()["detail"], r.text
        listed = await c.get(f"/api/v1/stores/{shop['store']}/invoices", headers=shop["read"])
        assert listed.json()["items"] == []
        ok = await c.post(f"/api/v1/stores/{shop['store']}/invoices",
                          headers={**shop["key"], "Idempotency-Key": "finite"},
                          json={"amount": "10", "currency": "SATS", "metadata": {"a": 1.5e300}})
        assert ok.status_code == 201 and ok.json()["metadata"] == {"a": 1.5e300}, ok.text


async def test_refunds_of_a_marked_invoice_follow_what_it_really_received(
        lnenv: LnEnv, shop):  # noqa: F811
    """A mark freezes the status, not the money: a payment taken back by a reorg after the
    mark cannot be refunded, and one confirmed after the mark can (found from outside: the
    refund cap stayed at what the invoice had received when it was marked)."""
    env = lnenv
    refunder = await refunder_key(env, shop)
    async with api_client(env) as c:
        # Partly paid, the part accepted with a mark, then a reorg takes that part away.
        gone = (await create(c, shop, "gone", amount="50000", currency="SATS",
                             payment_methods=["onchain"])).json()
        txid = env.chain.pay(gone["payment_methods"]["onchain"]["address"], 20_000)
        env.chain.mine(1)
        await settle_all(env)
        r = await c.post(f"/api/v1/invoices/{gone['id']}/mark", headers=shop["key"],
                         json={"status": "settled"})
        assert r.json()["paid_msat"] == 20_000 * SAT, r.text
        env.chain.reorg(1, drop_txids=[txid])
        await settle_all(env)
        # Paid in full but not yet confirmed when the merchant marked it settled.
        late = (await create(c, shop, "late", amount="30000", currency="SATS",
                             payment_methods=["onchain"])).json()
        env.chain.pay(late["payment_methods"]["onchain"]["address"], 30_000)
        await settle_all(env)
        r = await c.post(f"/api/v1/invoices/{late['id']}/mark", headers=shop["key"],
                         json={"status": "settled"})
        assert r.json()["paid_msat"] == 0, r.text
        env.chain.mine(1)
        await settle_all(env)
        got = {i: (await c.get(f"/api/v1/invoices/{i}", headers=shop["read"])).json()
               for i in (gone["id"], late["id"])}
        assert got[gone["id"]]["paid_msat"] == 0, got
        assert got[late["id"]]["paid_msat"] == 30_000 * SAT, got
        assert all(g["status"] == "settled" and g["additional_status"] == "marked"
                   for g in got.values())
        back = env.network.create_invoice("customer2", 20_000 * SAT).bolt11
        r = await c.post(f"/api/v1/invoices/{gone['id']}/refunds",
                         headers={**refunder, "Idempotency-Key": "rf-gone"},
                         json={"destination": back})
        assert r.status_code == 422, r.text  # it received nothing
        back = env.network.create_invoice("customer2", 25_000 * SAT).bolt11  # fees aside
        r = await c.post(f"/api/v1/invoices/{late['id']}/refunds",
                         headers={**refunder, "Idempotency-Key": "rf-late"},
                         json={"destination": back})
        assert r.status_code == 201, r.text
    await env.check()


async def test_zero_conf_credit_is_bounded_per_wallet_not_per_output(lnenv: LnEnv,
                                                                     shop):  # noqa: F811
    """Speed policy 0 credits an unconfirmed payment only up to zero_conf_max_sat (100,000
    sat here), because a double spend takes it back. Split into outputs, or transactions,
    of 100,000 sat each, a payment of any size was credited unconfirmed, spendable at once
    (found from outside: 300,000 sat credited from the mempool, withdrawn, then double-spent:
    the reversal found nothing to take back). What the wallet holds unconfirmed is bounded."""
    env = lnenv
    limit = env.settings.zero_conf_max_sat
    async with api_client(env) as c:
        inv = (await create(c, shop, "zc", amount="400000", currency="SATS", speed_policy=0,
                            payment_methods=["onchain"])).json()
        other = (await create(c, shop, "zc2", amount="100000", currency="SATS",
                              speed_policy=0, payment_methods=["onchain"])).json()
        address = inv["payment_methods"]["onchain"]["address"]
        split = env.chain.pay_many([(address, limit)] * 3)
        env.chain.pay(address, limit)  # a second transaction to the same address
        env.chain.pay(other["payment_methods"]["onchain"]["address"], limit)  # another invoice
        await settle_all(env)
        await settle_all(env)
        b = await env.balances(shop["wallet"])
        assert b["available"] + b["held"] <= limit * SAT, b  # credited while unconfirmed
        assert b["incoming"] + b["available"] + b["held"] >= 4 * limit * SAT, b
        env.chain.double_spend(split)
        await settle_all(env)
        env.chain.mine(1)
        await settle_all(env)
        b = await env.balances(shop["wallet"])
        fee = 2 * limit * SAT * env.settings.invoice_fee_bp // 10_000
        assert (b["available"], b["incoming"]) == (2 * limit * SAT - fee, 0), b
        got = (await c.get(f"/api/v1/invoices/{other['id']}", headers=shop["read"])).json()
        assert got["status"] == "settled", got
    await env.check()


async def test_a_lightning_payment_credited_after_expiry_was_made_in_time(
        lnenv: LnEnv, shop, clock):  # noqa: F811
    """The node settled the BOLT11 before the invoice expired; satvault heard of it only
    later (listener down, node restarting). A node never settles an expired BOLT11, so the
    payment was in time: not late, and not turned away where late payments are refused
    (found from outside: the invoice expired, paid_late, with the customer's money in)."""
    env = lnenv
    env.settings.invoice_accept_late = False
    async with api_client(env) as c:
        inv = (await create(c, shop, "in-time", amount="20000", currency="SATS",
                            expiration_minutes=1, payment_methods=["lightning"])).json()
        env.network.pay("customer1", inv["payment_methods"]["lightning"]["bolt11"])
        clock.advance(3 * 60)  # the listener catches up only now
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert (got["status"], got["additional_status"]) == ("settled", "none"), got
        assert got["paid_msat"] == 20_000 * SAT
    await env.check()
