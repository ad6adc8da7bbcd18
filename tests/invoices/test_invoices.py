"""Store invoices end to end on simnet and the Lightning simulator, through the HTTP API:
creation with idempotency, on-chain, Lightning and mixed payments, partial/over/late, expiry,
the platform fee in the same linked batch, a reorg after settlement, authorization."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.events.models import OutboxEvent
from satvault.invoices.tasks import refresh_open_invoices
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts, fees_earned
from satvault.ledger.store import get_account, submit_one
from satvault.lightning.invoices import InvoiceListener
from tests.chainenv import LnEnv, api_client
from tests.events.test_balance_events import balance_events

SAT = 1000




@pytest.fixture
async def shop(lnenv: LnEnv) -> dict:
    async with lnenv.sessions() as s, s.begin():
        merchant = await acc.create_merchant(s, name="Shop")
        store = await acc.create_store(s, merchant_id=merchant.id, name="Web", speed_policy=1)
        other = await acc.create_store(
            s, merchant_id=(await acc.create_merchant(s, name="Other")).id, name="B")
        _, key = await acc.create_api_key(s, owner_id=store.id,
                                          scopes=["invoices:write", "invoices:read"])
        _, read = await acc.create_api_key(s, owner_id=store.id, scopes=["invoices:read"])
        _, other_key = await acc.create_api_key(s, owner_id=other.id,
                                                scopes=["invoices:write", "invoices:read"])
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=merchant.id)
    return {"store": store.id, "key": {"Authorization": f"Bearer {key}"},
            "read": {"Authorization": f"Bearer {read}"},
            "other": {"Authorization": f"Bearer {other_key}"}, "wallet": wallet}


async def settle_all(env: LnEnv) -> None:
    await env.runtime.watcher.step()
    await InvoiceListener(env.sessions, env.runtime.lightning, node="lnd",
                          invoice_fee_bp=env.settings.invoice_fee_bp).sweep()
    await refresh_open_invoices(env.sessions, env.settings, env.runtime.lightning)


async def create(c, shop, idem: str, **body) -> httpx.Response:
    return await c.post(f"/api/v1/stores/{shop['store']}/invoices",
                        headers={**shop["key"], "Idempotency-Key": idem}, json=body)


async def refunder_key(env: LnEnv, shop) -> dict[str, str]:
    """A store key that may read invoices and send refunds."""
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=shop["store"], scopes=[
            "invoices:read", "withdrawals:write"])
    return {"Authorization": f"Bearer {token}"}


async def paid_lightning_invoice(c, env: LnEnv, shop, idem: str, *, sats: int) -> dict:
    """A Lightning-only invoice for ``sats``, paid by a customer and settled."""
    inv = (await create(c, shop, idem, amount=str(sats), currency="SATS",
                        payment_methods=["lightning"])).json()
    env.network.pay("customer1", inv["payment_methods"]["lightning"]["bolt11"])
    await settle_all(env)
    return inv


async def fees_and_merchant(env: LnEnv, shop) -> tuple[int, int]:
    async with env.sessions() as s:
        f = await fees_earned(s, "BTC")  # every fees stripe
        m = await get_account(s, shop["wallet"].ledger_account_id)
    return f, m.balances.credits_posted - m.balances.debits_posted


async def test_onchain_invoice_settles_with_fee_in_same_batch(lnenv: LnEnv, shop):
    env = lnenv
    async with api_client(env) as c:
        r = await create(c, shop, "a", amount="0.001", currency="BTC", order_id="o-1",
                         metadata={"cart": [1, 2]})
        assert r.status_code == 201, r.text
        inv = r.json()
        again = await create(c, shop, "a", amount="0.001", currency="BTC", order_id="o-1",
                             metadata={"cart": [1, 2]})
        assert again.json()["id"] == inv["id"]
        assert (await create(c, shop, "a", amount="0.002")).status_code == 422
        onchain, ln = inv["payment_methods"]["onchain"], inv["payment_methods"]["lightning"]
        assert "lightning=" in onchain["bip21"].lower() and ln["bolt11"].startswith("lnbcrt")
        assert inv["amount_msat"] == 100_000 * SAT and inv["status"] == "new"
        env.chain.pay(onchain["bip21"])
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "processing"
        env.chain.mine(1)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "settled" and got["paid_msat"] == 100_000 * SAT
    fee, merchant = await fees_and_merchant(env, shop)
    assert fee == 100_000 * SAT * env.settings.invoice_fee_bp // 10_000
    assert merchant == 100_000 * SAT - fee
    # The merchant's dashboards heard it: incoming while confirming, then spendable.
    moves = [(e["incoming_msat"], e["available_msat"])
             for e in await balance_events(env.sessions, shop["wallet"].id)]
    assert moves[0] == (100_000 * SAT, 0) and moves[-1] == (0, merchant)
    await env.check()


async def test_partial_onchain_then_lightning_remainder(lnenv: LnEnv, shop):
    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "m", amount="50000", currency="SATS")).json()
        env.chain.pay(inv["payment_methods"]["onchain"]["address"], 20_000)
        env.chain.mine(1)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "new" and got["additional_status"] == "paid_partial"
        rest = got["payment_methods"]["lightning"]
        assert rest["amount_msat"] == 30_000 * SAT  # a new BOLT11 for what is still due
        assert got["payment_methods"]["onchain"]["amount_sat"] == 30_000
        env.network.pay("customer1", rest["bolt11"])
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "settled" and got["paid_msat"] == 50_000 * SAT
        # the first BOLT11 (for the full amount) was cancelled when the invoice settled
        stale = env.network.pay("customer2", inv["payment_methods"]["lightning"]["bolt11"])
        assert stale.status.value.upper() == "FAILED"
    await env.check()


async def test_after_a_partial_payment_the_full_bolt11_is_cancelled(lnenv: LnEnv, shop):
    """Found from outside (stop 42): after a partial payment the first BOLT11, for the whole
    amount, stayed payable: a phone that had scanned the first QR code paid the whole amount
    again (70,000 sat seen on a 50,000 sat invoice). It is cancelled with the remainder's
    issue; if the partial payment goes away, a BOLT11 for the whole is issued anew."""
    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "full", amount="50000", currency="SATS")).json()
        first = inv["payment_methods"]["lightning"]["bolt11"]
        txid = env.chain.pay(inv["payment_methods"]["onchain"]["address"], 20_000)
        await settle_all(env)  # seen in the mempool: a partial payment
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "new" and got["additional_status"] == "paid_partial"
        assert got["payment_methods"]["lightning"]["amount_msat"] == 30_000 * SAT
        stale = env.network.pay("customer2", first)
        assert stale.status.value.upper() == "FAILED"
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["seen_msat"] == 20_000 * SAT and got["status"] == "new"
        # The partial payment is double-spent away: the whole is due again, and asked for.
        env.chain.double_spend(txid)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["seen_msat"] == 0 and got["status"] == "new"
        again = got["payment_methods"]["lightning"]
        assert again["amount_msat"] == 50_000 * SAT and again["bolt11"] != first
        assert env.network.pay("customer1", again["bolt11"]).status.value.upper() \
            == "SUCCEEDED"
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "settled" and got["paid_msat"] == 50_000 * SAT
    await env.check()


async def test_another_wallet_cannot_pay_the_full_bolt11_once_part_is_paid(lnenv: LnEnv,
                                                                           shop):
    """Found from outside (stop 42, against the cancel above): between a partial payment and
    the follow-up that cancels the first BOLT11 on the node, another wallet of the platform
    paid that BOLT11 internally: 14,000 sat paid for a 10,000 sat invoice. An internal
    payment of a store invoice's BOLT11 pays no more than the invoice still asks for, read
    under its lock."""
    from tests.lightning.test_lightning import fund

    env = lnenv
    payer = await env.wallet_for("payer@example.com")
    await fund(env, payer, 50_000 * SAT)
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=payer.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
    async with api_client(env) as c:
        inv = (await create(c, shop, "race", amount="10000", currency="SATS")).json()
        first = inv["payment_methods"]["lightning"]["bolt11"]
        env.chain.pay(inv["payment_methods"]["onchain"]["address"], 4_000)
        await env.runtime.watcher.step()
        # Counted, and the follow-up not yet at the node (no node given: the moment between).
        await refresh_open_invoices(env.sessions, env.settings, None)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["seen_msat"] == 4_000 * SAT
        r = await c.post(f"/api/v1/wallets/{payer.id}/withdrawals",
                         headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "x"},
                         json={"destination": first})
        assert r.status_code == 422 and "asks for less now" in r.text, r.text
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["paid_msat"] == 0 and got["seen_msat"] == 4_000 * SAT
        wallet = (await c.get(f"/api/v1/wallets/{payer.id}",
                              headers={"Authorization": f"Bearer {token}"})).json()
        assert wallet["available_msat"] == 50_000 * SAT
    await env.check()


async def test_an_invoice_paid_within_its_tolerance_asks_for_nothing_more(lnenv: LnEnv, shop):
    """Found from outside (stop 42): an invoice settled within its payment tolerance still
    offered an on-chain payment request for the shortfall in the API (`amount_sat`, `bip21`):
    a shop building its QR code from it asked a customer who had paid for more."""
    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "tol", amount="50000", currency="SATS",
                            payment_tolerance_percent="10")).json()
        env.chain.pay(inv["payment_methods"]["onchain"]["address"], 46_000)
        for mined in (False, True):  # processing, then settled
            if mined:
                env.chain.mine(1)
            await settle_all(env)
            got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
            assert got["status"] == ("settled" if mined else "processing"), got
            onchain = got["payment_methods"]["onchain"]
            assert onchain["amount_sat"] is None and onchain["bip21"] is None, onchain
            assert got["payment_methods"]["lightning"] is None or \
                got["payment_methods"]["lightning"]["bolt11"] is None
    await env.check()


async def test_a_remainder_bolt11_never_outlives_its_invoice(lnenv: LnEnv, shop):
    """Found from outside: a remainder BOLT11 lived at least 60 s, so one issued in the
    invoice's last minute outlived it, and a payment in that time was credited and the
    invoice recorded as paid late. It now expires with the invoice, and none is issued in
    the last seconds, when nobody could pay it anyway."""
    from datetime import timedelta

    import bolt11

    from satvault.db import utcnow
    from satvault.invoices.models import StoreInvoice
    from satvault.lightning.models import LnInvoice

    env = lnenv
    async with api_client(env) as c:
        soon = (await create(c, shop, "s30", amount="50000", currency="SATS")).json()
        last = (await create(c, shop, "s5", amount="50000", currency="SATS")).json()
        async with env.sessions() as s, s.begin():
            (await s.get(StoreInvoice, soon["id"])).expires_at = utcnow() + timedelta(seconds=30)
            (await s.get(StoreInvoice, last["id"])).expires_at = utcnow() + timedelta(seconds=5)
        for inv in (soon, last):
            env.chain.pay(inv["payment_methods"]["onchain"]["address"], 20_000)
        env.chain.mine(1)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{soon['id']}", headers=shop["read"])).json()
        rest = got["payment_methods"]["lightning"]
        assert rest["amount_msat"] == 30_000 * SAT, got
        decoded = bolt11.decode(rest["bolt11"])
        async with env.sessions() as s:
            ends = (await s.get(StoreInvoice, soon["id"])).expires_at
            rows = (await s.execute(select(LnInvoice).where(
                LnInvoice.store_invoice_id.in_([soon["id"], last["id"]])))).scalars().all()
        assert decoded.expiry_time <= ends.timestamp(), (decoded.expiry_time, ends)  # absolute
        [remainder] = [r for r in rows if r.amount_msat == 30_000 * SAT]
        assert remainder.store_invoice_id == soon["id"] and remainder.expires_at <= ends
        # Five seconds before the end no remainder is issued: only the first BOLT11 is there.
        assert [r.amount_msat for r in rows if r.store_invoice_id == last["id"]] == [
            50_000 * SAT]
    await env.check()


async def test_overpaid_late_expired_and_fiat(lnenv: LnEnv, shop):
    env = lnenv
    async with api_client(env) as c:
        over = (await create(c, shop, "o", amount="10000", currency="SATS")).json()
        env.chain.pay(over["payment_methods"]["onchain"]["address"], 12_000)
        env.chain.mine(1)
        expired = (await create(c, shop, "e", amount="10000", currency="SATS",
                                expiration_minutes=1)).json()
        late = (await create(c, shop, "l", amount="10000", currency="SATS",
                             expiration_minutes=1)).json()
        async with env.sessions() as s, s.begin():
            from datetime import timedelta

            from satvault.db import utcnow
            from satvault.invoices.models import StoreInvoice
            for i in (expired["id"], late["id"]):
                (await s.get(StoreInvoice, i)).expires_at = utcnow() - timedelta(seconds=1)
        await settle_all(env)
        env.chain.pay(late["payment_methods"]["onchain"]["address"], 10_000)
        env.chain.mine(1)
        await settle_all(env)
        got = {i: (await c.get(f"/api/v1/invoices/{i}", headers=shop["read"])).json()
               for i in (over["id"], expired["id"], late["id"])}
        assert (got[over["id"]]["status"], got[over["id"]]["additional_status"]) == (
            "settled", "paid_over")
        assert got[expired["id"]]["status"] == "expired"
        assert (got[late["id"]]["status"], got[late["id"]]["additional_status"]) == (
            "settled", "paid_late")
        fiat = (await create(c, shop, "f", amount="10.00", currency="USD")).json()
        assert fiat["rate"]["minor_units_per_btc"] == 6_000_000
        assert fiat["amount_msat"] == -(-1000 * 10**11 // 6_000_000)  # rounded up
        bad = await create(c, shop, "x", amount="10.001", currency="USD")
        assert bad.status_code == 422
    await env.check()


async def test_reorg_after_settlement_reverses_credit_and_fee(lnenv: LnEnv, shop):
    """The credit and the fee go back, and the invoice no longer says it settled (found from
    outside: it kept its settled_at, which merchants ship on)."""
    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "r", amount="40000", currency="SATS",
                            payment_methods=["onchain"])).json()
        txid = env.chain.pay(inv["payment_methods"]["onchain"]["address"], 40_000)
        env.chain.mine(1)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "settled" and got["settled_at"] is not None
        env.chain.reorg(1, drop_txids=[txid])
        await settle_all(env)
        after = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert after["status"] != "settled" and after["paid_msat"] == 0
        assert after["settled_at"] is None, after
    # Found from outside: the merchant was told nothing; the last event said "settled".
    async with env.sessions() as s:
        events = list((await s.execute(select(OutboxEvent.type, OutboxEvent.payload).where(
            OutboxEvent.subject_type == "invoice", OutboxEvent.subject_id == inv["id"]
        ).order_by(OutboxEvent.id))).all())
    types = [t for t, _ in events]
    assert types[types.index("invoice.settled") + 1:] == ["invoice.payment_reversed"], types
    reversed_ = json.loads(events[-1][1]) if isinstance(events[-1][1], str) else events[-1][1]
    assert reversed_["status"] == "new" and reversed_["paid_msat"] == 0
    _, merchant = await fees_and_merchant(env, shop)
    assert merchant == 0
    async with env.sessions() as s:
        assert await fees_earned(s, "BTC") == 0  # the fee went back with the credit
        from satvault.ledger.models import LedgerTransfer

        refs = dict((await s.execute(select(LedgerTransfer.code, LedgerTransfer.ref).where(
            LedgerTransfer.code.in_(("invoice_fee", "invoice_fee_reversal"))))).all())
    # Found from outside: the reversal's statement line named no invoice.
    assert refs["invoice_fee_reversal"] == refs["invoice_fee"] != "", refs
    await env.check()


async def test_a_unified_qr_paid_on_chain_is_not_paid_again_over_lightning(lnenv: LnEnv,
                                                                          shop):
    """Found from outside: once the on-chain payment of a unified QR was in the mempool
    (the invoice `processing`), the BOLT11 of the same QR stayed payable on the node, and a
    customer who paid it too paid the invoice twice. The BOLT11s are cancelled as soon as
    the invoice is processing; if the on-chain payment then goes away, a fresh BOLT11 asks
    for what is due again."""
    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "qr", amount="10000", currency="SATS")).json()
        onchain, ln = inv["payment_methods"]["onchain"], inv["payment_methods"]["lightning"]
        txid = env.chain.pay(onchain["bip21"])
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "processing"
        payment = env.network.pay("customer1", ln["bolt11"])
        assert payment.status != "SUCCEEDED", payment  # cancelled on the node
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["seen_msat"] == 10_000 * SAT, got
        # The on-chain payment goes away: the invoice is new again, with a BOLT11 to pay.
        env.chain.double_spend(txid)  # to an address of the customer's own
        await settle_all(env)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "new" and got["seen_msat"] == 0, got
        fresh = got["payment_methods"]["lightning"]["bolt11"]
        assert fresh and fresh != ln["bolt11"]
        env.network.pay("customer1", fresh)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "settled" and got["paid_msat"] == 10_000 * SAT, got
    await env.check()


async def test_authorization_listing_and_marks(lnenv: LnEnv, shop):
    env = lnenv
    async with api_client(env) as c:
        ids = [(await create(c, shop, f"k{i}", amount="1000", currency="SATS",
                             order_id=f"ord-{i % 2}")).json()["id"] for i in range(5)]
        r = await c.get(f"/api/v1/invoices/{ids[0]}", headers=shop["other"])
        assert r.status_code == 404
        r = await c.get(f"/api/v1/stores/{shop['store']}/invoices", headers=shop["other"])
        assert r.status_code == 404
        r = await c.post(f"/api/v1/stores/{shop['store']}/invoices",
                         headers={**shop["read"], "Idempotency-Key": "z"},
                         json={"amount": "1000", "currency": "SATS"})
        assert r.status_code == 403
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await c.get(f"/api/v1/stores/{shop['store']}/invoices", params=params,
                                headers=shop["read"])).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(seen) == sorted(ids)
        by_order = (await c.get(f"/api/v1/stores/{shop['store']}/invoices",
                                params={"order_id": "ord-1"}, headers=shop["read"])).json()
        assert len(by_order["items"]) == 2
        marked = await c.post(f"/api/v1/invoices/{ids[0]}/mark", headers=shop["key"],
                              json={"status": "invalid"})
        assert marked.json()["status"] == "invalid"
        assert marked.json()["additional_status"] == "marked"


async def test_a_marked_invoice_cannot_be_paid_over_lightning_any_more(lnenv: LnEnv, shop):
    """Found from outside: an invoice the merchant marked settled (paid some other way) or
    invalid (voided) kept its BOLT11 payable on the node, so a customer holding the QR code
    paid a settled invoice a second time, or a voided one. A mark cancels its BOLT11s."""
    from satvault.simnet.ln._model import PaymentStatus

    env = lnenv
    async with api_client(env) as c:
        for n, status in enumerate(("settled", "invalid")):
            inv = (await create(c, shop, f"m{n}", amount="2000", currency="SATS")).json()
            bolt11 = inv["payment_methods"]["lightning"]["bolt11"]
            r = await c.post(f"/api/v1/invoices/{inv['id']}/mark", headers=shop["key"],
                             json={"status": status})
            assert r.status_code == 200, r.text
            paid = env.network.pay("customer1", bolt11)
            assert paid.status == PaymentStatus.FAILED, (status, paid)
            await settle_all(env)
            got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
            assert (got["status"], got["paid_msat"]) == (status, 0)
    _, merchant = await fees_and_merchant(env, shop)
    assert merchant == 0  # nothing arrived
    await env.check()


async def test_a_typo_in_the_body_is_refused_and_creates_nothing(lnenv: LnEnv, shop):
    """Found from outside: unknown fields were ignored, so ``expiration_minute`` (for
    ``expiration_minutes``) made an invoice with the default expiry instead of an error."""
    env = lnenv
    async with api_client(env) as c:
        r = await create(c, shop, "typo", amount="1000", currency="SATS", expiration_minute=5)
        assert r.status_code == 422, r.text
        assert "expiration_minute" in r.text
        listed = (await c.get(f"/api/v1/stores/{shop['store']}/invoices",
                              headers=shop["read"])).json()
        assert listed["items"] == []
        ok = await create(c, shop, "typo", amount="1000", currency="SATS")  # same key: free
        assert ok.status_code == 201, ok.text


async def test_a_mark_cut_short_before_its_follow_up_is_finished_by_the_sweep(lnenv: LnEnv,
                                                                               shop):
    """Found from outside: a process that died between a mark's commit and its follow-up on
    the node (or a node that failed the cancel) left a voided invoice's BOLT11 payable for
    good: the sweep never looked at ``invalid`` invoices, nor at settled ones past their
    monitoring window. The full sweep now takes every open BOLT11 of an invoice nobody may
    pay any more off the node."""
    from satvault.simnet.ln._model import PaymentStatus

    env = lnenv
    follow_up, env.runtime.invoice_follow_up = env.runtime.invoice_follow_up, None
    async with api_client(env) as c:
        marked = {}
        for n, status in enumerate(("settled", "invalid")):
            inv = (await create(c, shop, f"cut{n}", amount="2000", currency="SATS")).json()
            r = await c.post(f"/api/v1/invoices/{inv['id']}/mark", headers=shop["key"],
                             json={"status": status})
            assert r.status_code == 200, r.text
            marked[status] = inv
        env.runtime.invoice_follow_up = follow_up  # the process comes back: its first sweep
        await refresh_open_invoices(env.sessions, env.settings, env.runtime.lightning)
        for status, inv in marked.items():
            paid = env.network.pay("customer1", inv["payment_methods"]["lightning"]["bolt11"])
            assert paid.status == PaymentStatus.FAILED, (status, paid)
        await settle_all(env)
        for status, inv in marked.items():
            got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
            assert (got["status"], got["paid_msat"]) == (status, 0)
    _, merchant = await fees_and_merchant(env, shop)
    assert merchant == 0
    await env.check()


async def test_the_first_bolt11_goes_once_lightning_pays_the_rest(lnenv: LnEnv, shop):
    """Found from outside: part paid on-chain (unconfirmed), the rest paid with the page's
    new BOLT11: the invoice was processing, but its first, full-amount BOLT11 stayed payable
    (the crediting transaction had set the status, so the sweep saw no change and skipped
    the node's follow-up), and the customer paid the whole invoice a second time."""
    from satvault.simnet.ln._model import PaymentStatus

    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "fb", amount="50000", currency="SATS")).json()
        first = inv["payment_methods"]["lightning"]["bolt11"]
        env.chain.pay(inv["payment_methods"]["onchain"]["address"], 20_000)  # unconfirmed
        await settle_all(env)
        rest = (await c.get(f"/i/{inv['id']}/status")).json()["destinations"]["bolt11"]
        assert rest and rest != first
        assert env.network.pay("customer1", rest).status == PaymentStatus.SUCCEEDED
        # As a running app does: the listener credits it and sets the invoice's status in
        # that transaction; then the invoices' sweep passes by.
        await env.runtime.listener.sweep()
        await refresh_open_invoices(env.sessions, env.settings, env.runtime.lightning)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert (got["status"], got["seen_msat"]) == ("processing", 50_000_000)
        again = env.network.pay("customer1", first)
        assert again.status == PaymentStatus.FAILED, again
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["seen_msat"] == 50_000_000  # paid once
    await env.check()


async def test_on_chain_never_asks_for_less_than_an_output_can_carry(lnenv: LnEnv, shop):
    """Found from outside: a 0.01 USD invoice offered an on-chain BIP21 for 17 sat, and an
    on-chain remainder of 200 sat was asked for: outputs that small are dust, which no node
    relays, so the customer could not pay them. Below 294 sat (a P2WPKH output's dust limit)
    on-chain is not offered at creation; a remainder asks for at least that much."""
    env = lnenv
    async with api_client(env) as c:
        tiny = await create(c, shop, "d1", amount="17", currency="SATS")
        assert tiny.status_code == 201, tiny.text
        methods = tiny.json()["payment_methods"]
        assert methods["onchain"] is None and methods["lightning"]["bolt11"]
        only = await create(c, shop, "d2", amount="17", currency="SATS",
                            payment_methods=["onchain"])
        assert only.status_code == 422 and "294 sat" in only.json()["detail"], only.text
        inv = (await create(c, shop, "d3", amount="10000", currency="SATS",
                            payment_methods=["onchain"])).json()
        env.chain.pay(inv["payment_methods"]["onchain"]["address"], 9_800)
        env.chain.mine(1)
        await settle_all(env)
        st = (await c.get(f"/i/{inv['id']}/status")).json()
        assert st["due_msat"] == 200_000
        assert st["destinations"]["onchain_amount_sat"] == 294
        env.chain.pay(st["destinations"]["onchain_uri"])  # payable: no longer dust
        env.chain.mine(1)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
        assert got["status"] == "settled" and got["paid_msat"] == 10_094_000
    await env.check()


async def test_store_settings_from_the_api_apply_to_new_invoices(lnenv: LnEnv, shop):
    """The spread and default currency set through PATCH /stores/{id} price the next invoice;
    an invoice created before keeps the rate it locked."""
    env = lnenv
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=shop["store"], scopes=["stores:write"])
    admin = {"Authorization": f"Bearer {token}"}
    async with api_client(env) as c:
        before = (await create(c, shop, "sp0", amount="10.00", currency="USD")).json()
        r = await c.patch(f"/api/v1/stores/{shop['store']}", headers=admin,
                          json={"spread_bp": 100, "default_currency": "usd"})  # 1 %
        assert r.status_code == 200, r.text
        assert (r.json()["spread_bp"], r.json()["default_currency"]) == (100, "USD")
        inv = (await create(c, shop, "sp", amount="10.00")).json()
        again = (await c.get(f"/api/v1/invoices/{before['id']}", headers=shop["read"])).json()
    assert inv["currency"] == "USD"
    assert inv["rate"]["minor_units_per_btc"] == 6_000_000 * 9_900 // 10_000
    assert inv["amount_msat"] > -(-1000 * 10**11 // 6_000_000)
    assert again["rate"] == before["rate"] and again["amount_msat"] == before["amount_msat"]


async def test_refund_is_a_withdrawal_from_the_merchant_with_store_events(lnenv: LnEnv, shop):
    from sqlalchemy import select

    from satvault.events.models import OutboxEvent

    env = lnenv
    refunder = await refunder_key(env, shop)
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "rf", sats=30_000)
        url = f"/api/v1/invoices/{inv['id']}/refunds"
        too_much = await c.post(url, headers={**refunder, "Idempotency-Key": "r0"},
                                json={"destination": env.network.create_invoice(
                                    "customer2", 40_000 * SAT).bolt11})
        assert too_much.status_code == 422
        back = env.network.create_invoice("customer2", 10_000 * SAT, memo="refund").bolt11
        r = await c.post(url, headers={**refunder, "Idempotency-Key": "r1"},
                         json={"destination": back})
        assert r.status_code == 201, r.text
        assert r.json()["method"] == "lightning"
        assert (await c.post(url, headers={**shop["other"], "Idempotency-Key": "r2"},
                             json={"destination": back})).status_code in (403, 404)
        # refunds add up: 30k received, 10k refunded, so 25k more is refused, 20k is fine
        over = await c.post(url, headers={**refunder, "Idempotency-Key": "r3"},
                            json={"destination": env.network.create_invoice(
                                "customer2", 25_000 * SAT).bolt11})
        assert over.status_code == 422 and "left" in over.json()["detail"]
        await env.runtime.payer.step()
    async with env.sessions() as s:
        kinds = [e.type for e in (await s.execute(select(OutboxEvent).where(
            OutboxEvent.subject_type == "withdrawal").order_by(OutboxEvent.id))).scalars()]
    assert kinds == ["withdrawal.created", "withdrawal.broadcast", "withdrawal.confirmed"]
    _, merchant = await fees_and_merchant(env, shop)
    fee = 30_000 * SAT * env.settings.invoice_fee_bp // 10_000
    assert 0 < merchant < 30_000 * SAT - fee - 10_000 * SAT + 1
    await env.check()


async def test_event_payloads_carry_an_absolute_checkout_url(lnenv: LnEnv, shop):
    """A webhook receiver gets a link it can send a customer, not a path on our host."""
    from sqlalchemy import select

    from satvault.events.models import OutboxEvent

    env = lnenv
    env.settings.public_url = "https://pay.example.com"
    async with api_client(env) as c:
        r = await create(c, shop, "abs", amount="1000", currency="SATS")
        assert r.status_code == 201, r.text
        inv = r.json()
    assert inv["checkout_url"] == f"https://pay.example.com/i/{inv['id']}"
    async with env.sessions() as s:
        payload = (await s.execute(select(OutboxEvent.payload).where(
            OutboxEvent.subject_id == inv["id"], OutboxEvent.type == "invoice.created"))
        ).scalar_one()
    assert '"checkout_url":"https://pay.example.com/i/' in payload


async def test_concurrent_refunds_never_exceed_what_the_invoice_received(lnenv: LnEnv, shop):
    """Eight refunds of 7k race for an invoice that received 30k: four win, four are refused
    for the cap (not for the balance), and the merchant pays out exactly four refunds."""
    import asyncio

    env = lnenv
    refunder = await refunder_key(env, shop)
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "race", sats=30_000)
        _, before = await fees_and_merchant(env, shop)
        url = f"/api/v1/invoices/{inv['id']}/refunds"
        bolt11s = [env.network.create_invoice("customer2", 7_000 * SAT, memo=f"r{i}").bolt11
                   for i in range(8)]
        answers = await asyncio.gather(*(
            c.post(url, headers={**refunder, "Idempotency-Key": f"race-{i}"},
                   json={"destination": b}) for i, b in enumerate(bolt11s)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [201] * 4 + [422] * 4, [a.text for a in answers]
        assert all("left" in a.json()["detail"] for a in answers if a.status_code == 422)
        await env.runtime.payer.step()
    _, after = await fees_and_merchant(env, shop)
    assert 28_000 * SAT <= before - after < 28_500 * SAT  # four refunds plus routing fees
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_create": "1000/second"}])
async def test_refunds_paid_inside_the_platform_count_against_the_cap(lnenv: LnEnv, shop):
    """A refund to another wallet's invoice of this platform settles at once (an internal
    payment, written by a statement of its own): it counts against what the invoice received
    like any refund, so a 10k invoice can be refunded 10k and no more."""
    from satvault.lightning.invoices import create_invoice

    env = lnenv
    bob = await env.wallet_for("bob@example.com")
    async with env.sessions() as s, s.begin():  # the merchant has plenty besides
        equity = (await ensure_platform_accounts(s, "BTC")).equity.id
    await submit_one(env.sessions, TransferSpec("fund:shop", equity,
                                                shop["wallet"].ledger_account_id,
                                                100_000 * SAT, "BTC"))
    refunder = await refunder_key(env, shop)
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "inside", sats=10_000)
        answers = []
        for i in range(3):
            async with env.sessions() as s, s.begin():
                bill = await create_invoice(s, backend=env.runtime.lightning, wallet=bob,
                                            amount_msat=4_000 * SAT, memo=f"refund {i}")
            r = await c.post(f"/api/v1/invoices/{inv['id']}/refunds",
                             headers={**refunder, "Idempotency-Key": f"inside-{i}"},
                             json={"destination": bill.bolt11})
            answers.append(r)
    assert [a.status_code for a in answers] == [201, 201, 422], [a.text for a in answers]
    assert answers[0].json()["method"] == "internal"
    assert "2000000 msat are left" in answers[2].json()["detail"]
    assert (await env.balances(bob))["available"] == 8_000 * SAT
    await env.check()


async def test_refresher_looks_only_at_invoices_that_can_have_changed(lnenv: LnEnv, shop):
    """After its first full sweep the invoice worker's tick looks at no invoice while nothing
    happens, however many are open; a payment on either rail, or an expiry coming due, is
    picked up by the next tick."""
    from datetime import timedelta

    from sqlalchemy import update

    from satvault.db import utcnow
    from satvault.invoices.models import StoreInvoice
    from satvault.invoices.tasks import InvoiceRefresher

    env = lnenv
    refresher = InvoiceRefresher(env.sessions, env.settings, env.runtime.lightning)
    async with api_client(env) as c:
        invs = [(await create(c, shop, f"r{i}", amount="2000", currency="SATS")).json()
                for i in range(12)]
        await refresher.step()
        assert refresher.checked == 12  # the first tick is the full sweep
        await refresher.step()
        assert refresher.checked == 0

        env.chain.pay(invs[0]["payment_methods"]["onchain"]["address"], 2_000)
        await env.runtime.watcher.step()
        assert await refresher.step() == 1
        assert refresher.checked == 1
        env.network.pay("customer1", invs[1]["payment_methods"]["lightning"]["bolt11"])
        await InvoiceListener(env.sessions, env.runtime.lightning, node="lnd",
                              invoice_fee_bp=env.settings.invoice_fee_bp).sweep()
        assert await refresher.step() == 1
        # The clock: invoice 2 reaches its expiry (moved into the past here).
        async with env.sessions() as s, s.begin():
            past = utcnow() - timedelta(seconds=1)
            await s.execute(update(StoreInvoice).where(StoreInvoice.id == invs[2]["id"])
                            .values(expires_at=past, next_check_at=past))
        assert await refresher.step() == 1
        got = {i["id"]: (await c.get(f"/api/v1/invoices/{i['id']}", headers=shop["read"])
                         ).json()["status"] for i in invs[:4]}
        assert list(got.values()) == ["processing", "settled", "expired", "new"]
        # Re-checking recent payments inside the safety margin changes nothing.
        assert await refresher.step() == 0
        async with env.sessions() as s:
            nxt = (await s.get(StoreInvoice, invs[2]["id"])).next_check_at
        monitoring = timedelta(minutes=env.settings.invoice_monitoring_minutes)
        assert nxt == past + monitoring  # next: the end of the monitoring window


async def test_status_is_set_by_the_crediting_transaction(lnenv: LnEnv, shop):
    """Settled the moment the payment is credited (Lightning listener, on-chain watcher), no
    refresher tick needed; the refresher passing by afterwards emits nothing twice."""
    env = lnenv
    async with api_client(env) as c:
        ln = (await create(c, shop, "now-ln", amount="1000", currency="SATS",
                           payment_methods=["lightning"])).json()
        env.network.pay("customer1", ln["payment_methods"]["lightning"]["bolt11"])
        await env.runtime.listener.sweep()  # the runtime's listener: credits, nothing else
        got = (await c.get(f"/api/v1/invoices/{ln['id']}", headers=shop["read"])).json()
        assert got["status"] == "settled", got
        oc = (await create(c, shop, "now-oc", amount="0.0001", currency="BTC",
                           payment_methods=["onchain"])).json()
        env.chain.pay(oc["payment_methods"]["onchain"]["bip21"])
        env.chain.mine(1)
        await env.runtime.watcher.step()
        got = (await c.get(f"/api/v1/invoices/{oc['id']}", headers=shop["read"])).json()
        assert got["status"] == "settled", got
        await refresh_open_invoices(env.sessions, env.settings, env.runtime.lightning)
    async with env.sessions() as s:
        settled = (await s.execute(select(OutboxEvent.subject_id).where(
            OutboxEvent.type == "invoice.settled"))).scalars().all()
    assert sorted(settled) == sorted([ln["id"], oc["id"]])
    await env.check()


async def test_a_payment_after_settlement_is_told_while_the_invoice_is_watched(lnenv: LnEnv,
                                                                               shop):
    """A second payment to a settled invoice's address within its monitoring window: the
    invoice shows it (``paid_over``, ``paid_msat``) and ``invoice.payment_received`` says so,
    with no second ``invoice.settled``."""
    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "x", amount="20000", currency="SATS",
                            payment_methods=["onchain"])).json()
        address = inv["payment_methods"]["onchain"]["address"]
        env.chain.pay(address, 20_000)
        env.chain.mine(1)
        await settle_all(env)
        env.chain.pay(address, 5_000)  # the customer's second tap
        env.chain.mine(1)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
    assert (got["status"], got["additional_status"], got["paid_msat"]) == (
        "settled", "paid_over", 25_000_000), got
    async with env.sessions() as s:
        events = list((await s.execute(select(OutboxEvent.type, OutboxEvent.payload).where(
            OutboxEvent.subject_type == "invoice", OutboxEvent.subject_id == inv["id"]
        ).order_by(OutboxEvent.id))).all())
    types = [t for t, _ in events]
    assert types.count("invoice.settled") == 1, types
    assert types[types.index("invoice.settled") + 1:] == ["invoice.payment_received"], types
    last = json.loads(events[-1][1]) if isinstance(events[-1][1], str) else events[-1][1]
    assert last["paid_msat"] == 25_000_000 and last["status"] == "settled", last
    await env.check()
