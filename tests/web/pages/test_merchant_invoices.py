"""The invoices page on simnet and the Lightning simulator: create an invoice through the page
(the API then shows it), the list with its filters, the detail with each payment (Lightning
payment hash, on-chain txid and confirmations), the checkout link and QR, marking with a
confirmation; CSRF; another merchant's invoices and stores not found."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from satvault.accounts import service as acc
from satvault.simnet.ln._model import PaymentStatus
from satvault.web.app import create_app
from tests.chainenv import LnEnv
from tests.invoices.test_invoices import settle_all
from tests.web.pages.conftest import PASSWORD, csrf_of, sign_in


@dataclass
class Shop:
    merchant: str
    store: str
    other_merchant: str
    other_store: str
    key: dict[str, str]


@pytest.fixture
async def shop(lnenv: LnEnv) -> Shop:
    async with lnenv.sessions() as s, s.begin():
        carol = await acc.create_user(s, email="carol@example.com", password=PASSWORD)
        dave = await acc.create_user(s, email="dave@example.com", password=PASSWORD)
        m = await acc.create_merchant(s, name="Carol's", owner_user_id=carol.id)
        other = await acc.create_merchant(s, name="Dave's", owner_user_id=dave.id)
        store = await acc.create_store(s, merchant_id=m.id, name="Web", speed_policy=1)
        other_store = await acc.create_store(s, merchant_id=other.id, name="D")
        _, key = await acc.create_api_key(s, owner_id=store.id, scopes=["invoices:read"])
    return Shop(m.id, store.id, other.id, other_store.id, {"Authorization": f"Bearer {key}"})


@pytest.fixture
async def web(lnenv: LnEnv) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(lnenv.settings, engine=lnenv.sessions.kw["bind"], start_workers=False,
                     runtime=lnenv.runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_create_pay_and_mark(web: httpx.AsyncClient, shop: Shop, lnenv: LnEnv) -> None:
    assert (await sign_in(web, "carol@example.com")).status_code == 303
    base = f"/dashboard/m/{shop.merchant}/invoices"
    page = await web.get(base)
    token = csrf_of(page.text)
    form = {"csrf_token": token, "store_id": shop.store, "amount": "2500",
            "currency": "SATS", "description": "Two coffees", "order_id": "A-1",
            "expiration_minutes": "30", "payment_methods": ["lightning", "onchain"]}
    r = await web.post(base, data={**form, "amount": "-5"})
    assert r.status_code == 422 and "Two coffees" in r.text
    r = await web.post(base, data={**form, "payment_methods": []})
    assert r.status_code == 422
    # Found from outside: a redirect with credentials read as the shop's and led elsewhere.
    r = await web.post(base, data={**form, "redirect_url": "https://shop.example@evil.example"})
    assert r.status_code == 422 and "credentials" in r.text
    assert (await web.post(base, data={k: v for k, v in form.items()
                                       if k != "csrf_token"})).status_code == 403
    listed = (await web.get(f"/api/v1/stores/{shop.store}/invoices", headers=shop.key)).json()
    assert listed["items"] == []

    r = await web.post(base, data=form)
    assert r.status_code == 303, r.text
    invoice_id = r.headers["location"].rsplit("/", 1)[1]
    api = (await web.get(f"/api/v1/invoices/{invoice_id}", headers=shop.key)).json()
    assert (api["amount_msat"], api["order_id"], api["metadata"]) == \
        (2_500_000, "A-1", {"itemDesc": "Two coffees"})
    detail = await web.get(f"{base}/{invoice_id}")
    assert detail.status_code == 200
    assert api["checkout_url"] in detail.text and f'href="/i/{invoice_id}"' in detail.text
    assert "data:image/svg+xml;base64," in detail.text
    assert api["payment_methods"]["onchain"]["address"] in detail.text
    # Moments for people, in the page's locale: not the API's ISO 8601 text.
    assert api["expires_at"] not in detail.text
    assert re.search(r"<dt>Expires</dt><dd>[A-Z][a-z]{2} \d{1,2}, \d{4}, ", detail.text)
    assert re.search(r"<dt>Expires</dt><dd>[^<]* UTC</dd>", detail.text)  # says its zone

    # Paid over Lightning: the detail shows the payment with its hash.
    bolt11 = api["payment_methods"]["lightning"]["bolt11"]
    lnenv.network.pay("customer1", bolt11)
    await settle_all(lnenv)
    api = (await web.get(f"/api/v1/invoices/{invoice_id}", headers=shop.key)).json()
    assert api["status"] == "settled"
    detail = await web.get(f"{base}/{invoice_id}")
    from satvault.lightning.bolt11check import decode
    assert decode(bolt11).payment_hash in detail.text and "settled" in detail.text

    # The list, filtered as the API filters.
    listing = await web.get(base, params={"store": shop.store, "status": "settled"})
    assert invoice_id in listing.text
    assert api["created_at"] not in listing.text
    assert invoice_id not in (await web.get(base, params={"store": shop.store,
                                                          "status": "new"})).text
    assert invoice_id not in (await web.get(base, params={
        "store": shop.store, "created_from": "2099-01-01"})).text
    assert (await web.get(base, params={"created_from": "yesterday"})).status_code == 422

    # Marking a new invoice invalid: only with the confirmation ticked.
    r = await web.post(base, data={**form, "order_id": "A-2"})
    second = r.headers["location"].rsplit("/", 1)[1]
    mark = f"{base}/{second}/mark"
    r = await web.post(mark, data={"csrf_token": token, "status": "invalid"})
    assert r.status_code == 422 and "confirm" in r.text
    assert (await web.post(mark, data={"status": "invalid", "confirm": "yes"})
            ).status_code == 403
    before = (await web.get(f"/api/v1/invoices/{second}", headers=shop.key)).json()
    assert before["status"] == "new"
    r = await web.post(mark, data={"csrf_token": token, "status": "invalid", "confirm": "yes"})
    assert r.status_code == 303
    api = (await web.get(f"/api/v1/invoices/{second}", headers=shop.key)).json()
    assert (api["status"], api["additional_status"]) == ("invalid", "marked")
    # Its BOLT11 went off the node with the mark: a customer's QR code no longer pays it.
    late = lnenv.network.pay("customer1", before["payment_methods"]["lightning"]["bolt11"])
    assert late.status == PaymentStatus.FAILED, late

    # A refund is a withdrawal: without a step-up, off to the step-up page.
    r = await web.post(f"{base}/{invoice_id}/refund",
                       data={"csrf_token": token, "destination": "x", "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"].startswith("/account/step-up")


async def test_other_merchants_invoices(web: httpx.AsyncClient, shop: Shop,
                                        lnenv: LnEnv) -> None:
    assert (await sign_in(web, "dave@example.com")).status_code == 303
    dave = f"/dashboard/m/{shop.other_merchant}/invoices"
    token = csrf_of((await web.get(dave)).text)
    r = await web.post(dave, data={"csrf_token": token, "store_id": shop.other_store,
                                   "amount": "1000", "currency": "SATS",
                                   "payment_methods": ["lightning"]})
    assert r.status_code == 303
    daves = r.headers["location"].rsplit("/", 1)[1]
    await web.post("/logout", data={"csrf_token": token})

    assert (await sign_in(web, "carol@example.com")).status_code == 303
    base = f"/dashboard/m/{shop.merchant}/invoices"
    token = csrf_of((await web.get(base)).text)
    assert (await web.get(dave)).status_code == 404
    assert (await web.get(f"{base}/{daves}")).status_code == 404
    assert (await web.get(base, params={"store": shop.other_store})).status_code == 404
    r = await web.post(base, data={"csrf_token": token, "store_id": shop.other_store,
                                   "amount": "1", "currency": "SATS",
                                   "payment_methods": ["lightning"]})
    assert r.status_code == 404
    r = await web.post(f"{base}/{daves}/mark", data={"csrf_token": token, "status": "invalid",
                                                     "confirm": "yes"})
    assert r.status_code == 404
    async with lnenv.sessions() as s:
        from satvault.invoices.service import get_invoice
        assert (await get_invoice(s, daves)).status == "new"


async def onchain_invoice_by_form(web: httpx.AsyncClient, shop: Shop, btc: str
                                  ) -> tuple[str, str]:
    """Carol signs in and makes an on-chain invoice of ``btc`` through the form: the
    invoices page's path and the invoice's id."""
    assert (await sign_in(web, "carol@example.com")).status_code == 303
    base = f"/dashboard/m/{shop.merchant}/invoices"
    token = csrf_of((await web.get(base)).text)
    r = await web.post(base, data={"csrf_token": token, "store_id": shop.store,
                                   "amount": btc, "currency": "BTC",
                                   "payment_methods": "onchain"})
    assert r.status_code == 303, r.text
    return base, r.headers["location"].rsplit("/", 1)[1]


async def test_onchain_payment_with_its_confirmations(web: httpx.AsyncClient, shop: Shop,
                                                      lnenv: LnEnv) -> None:
    from sqlalchemy import select

    from satvault.onchain.models import OnchainPayment

    base, invoice_id = await onchain_invoice_by_form(web, shop, "0.001")
    api = (await web.get(f"/api/v1/invoices/{invoice_id}", headers=shop.key)).json()
    assert api["payment_methods"]["lightning"] is None
    lnenv.chain.pay(api["payment_methods"]["onchain"]["bip21"])
    await settle_all(lnenv)
    async with lnenv.sessions() as s:
        [paid] = (await s.execute(select(OnchainPayment))).scalars().all()
    detail = await web.get(f"{base}/{invoice_id}")
    assert paid.txid in detail.text and "0 / 1" in detail.text and "processing" in detail.text
    lnenv.chain.mine(1)
    await settle_all(lnenv)
    detail = await web.get(f"{base}/{invoice_id}")
    assert "1 / 1" in detail.text and "settled" in detail.text
    assert (await web.get(f"/api/v1/invoices/{invoice_id}", headers=shop.key)).json()[
        "status"] == "settled"


@pytest.mark.parametrize("params", [
    {"store": "s" * 41}, {"status": "x" * 13}, {"created_from": "2026-01-01T00:00:00Z"},
    {"created_to": "2026-01-01T00:00:00Z"}, {"cursor": "c" * 201}])
async def test_the_list_refuses_filters_over_their_limits_with_a_422(browser, people, sessions,
                                                                     params):
    """The filters are bounded as the page's model says (store id 40, status 12, days 10,
    cursor 200 characters): a longer one was refused by a parse outside any handler, a bare
    FormRefused and so a 500. FastAPI now reads the query into that model: a 422."""
    async with sessions() as s, s.begin():
        await acc.create_store(s, merchant_id=people.alice_merchant, name="Kiosk")
    assert (await sign_in(browser, "alice@example.com")).status_code == 303
    path = f"/dashboard/m/{people.alice_merchant}/invoices"
    assert (await browser.get(path)).status_code == 200
    assert (await browser.get(path, params=params)).status_code == 422, params


async def test_the_list_through_the_last_day_has_no_end(browser, people, sessions):
    """``created_to`` is a day, included: its bound is the midnight after it, and 9999-12-31
    has none (``date.max + 1 day`` overflowed: a 500). Through the last day is no bound."""
    async with sessions() as s, s.begin():
        await acc.create_store(s, merchant_id=people.alice_merchant, name="Kiosk")
    assert (await sign_in(browser, "alice@example.com")).status_code == 303
    path = f"/dashboard/m/{people.alice_merchant}/invoices"
    for params in ({"created_to": "9999-12-31"},
                   {"created_from": "0001-01-01", "created_to": "9999-12-31"}):
        r = await browser.get(path, params=params)
        assert r.status_code == 200, (params, r.text[:300])


async def test_a_refund_form_sent_twice_refunds_once(web: httpx.AsyncClient, shop: Shop,
                                                     lnenv: LnEnv) -> None:
    """A double click, or a browser sending the form again after a timeout, is one refund
    (found from outside: two withdrawals went out, each within the invoice's cap, like the
    withdraw form before it carried an idempotency key)."""
    from sqlalchemy import func, select

    from satvault.accounts.models import User
    from satvault.payouts.models import Withdrawal
    from tests.web.pages.merchant_helpers import step_up

    assert (await sign_in(web, "carol@example.com")).status_code == 303
    base = f"/dashboard/m/{shop.merchant}/invoices"
    token = csrf_of((await web.get(base)).text)
    r = await web.post(base, data={"csrf_token": token, "store_id": shop.store,
                                   "amount": "40000", "currency": "SATS",
                                   "payment_methods": ["onchain"]})
    invoice_id = r.headers["location"].rsplit("/", 1)[1]
    api = (await web.get(f"/api/v1/invoices/{invoice_id}", headers=shop.key)).json()
    lnenv.chain.pay(api["payment_methods"]["onchain"]["address"], 40_000)
    lnenv.chain.mine(1)
    await settle_all(lnenv)
    async with lnenv.sessions() as s:
        carol = (await s.execute(select(User.id).where(
            User.email == "carol@example.com"))).scalar_one()
    await step_up(lnenv.sessions, carol)
    page = await web.get(f"{base}/{invoice_id}")
    form = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"',
                           page.text.split('id="refund"', 1)[1].split("</form>", 1)[0]))
    back = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"  # the customer's address
    form |= {"destination": back, "amount_sat": "10000", "confirm": "yes"}
    # An amount with a comma that separates no thousands: refused, nothing refunded.
    bad = await web.post(f"{base}/{invoice_id}/refund", data={**form, "amount_sat": "10,0"})
    assert bad.status_code == 422 and "a whole number of sats" in bad.text
    first = await web.post(f"{base}/{invoice_id}/refund", data=form)
    again = await web.post(f"{base}/{invoice_id}/refund", data=form)
    assert first.status_code == again.status_code == 303, again.text
    async with lnenv.sessions() as s:
        refunds = (await s.execute(select(func.count()).select_from(Withdrawal).where(
            Withdrawal.invoice_id == invoice_id))).scalar_one()
    assert refunds == 1
    # Another refund is another form: the page hands out a new key.
    page = await web.get(f"{base}/{invoice_id}")
    fresh = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"',
                            page.text.split('id="refund"', 1)[1].split("</form>", 1)[0]))
    r = await web.post(f"{base}/{invoice_id}/refund",
                       data={**fresh, "destination": back, "amount_sat": "10,000",
                             "confirm": "yes"})
    assert r.status_code == 303, r.text
    async with lnenv.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Withdrawal).where(
            Withdrawal.invoice_id == invoice_id))).scalar_one() == 2
    await lnenv.check()


async def test_an_amount_owed_shows_the_sats_its_payer_is_asked_for(
        web: httpx.AsyncClient, shop: Shop, lnenv: LnEnv) -> None:
    """Found from outside: 16,835,017 msat showed as 16,835 sats on the dashboard while the
    payer was asked for 16,836 (BIP21 and the checkout page round an amount owed up)."""
    base, invoice_id = await onchain_invoice_by_form(web, shop, "0.00016835017")
    api = (await web.get(f"/api/v1/invoices/{invoice_id}", headers=shop.key)).json()
    assert api["amount_msat"] == 16_835_017, api
    assert "amount=0.00016836" in api["payment_methods"]["onchain"]["bip21"], api
    detail = (await web.get(f"{base}/{invoice_id}")).text
    assert "16,836 sats" in detail and "16,835 sats" not in detail
    listed = (await web.get(base)).text
    assert "16,836" in listed and "16,835<" not in listed
