"""The merchant dashboard's money pages over the simnet chain and Lightning network: the
overview's balances are the API's and follow a payment live (the page's own event stream),
deposits through the pages, withdrawals behind the step-up and idempotent, bad input shown
again with nothing changed, and another merchant's pages are 404."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.auth.sessions import list_sessions, mark_stepped_up
from satvault.kernel.clock import utcnow
from satvault.payouts.models import Withdrawal
from satvault.reports.dashboard import daily_volume
from tests.chainenv import LnEnv
from tests.checkout.conftest import settle_all
from tests.web.pages.conftest import csrf_of, sign_in
from tests.web.pages.merchant_env import Shops, shops_fixture, site  # noqa: F401 (a fixture)

DEST = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"
MAINNET = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
_FIGURE = re.compile(r'data-balance="(\w+)">([^<]*)<')
_KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"rate_limit_enabled": False}


def form_error(html: str) -> str:
    found = re.search(r'role="alert" id="form-error">([^<]+)<', html)
    return found.group(1) if found else ""


def key_of(html: str) -> str:
    """The withdrawal form's idempotency key (a hidden field)."""
    found = _KEY.search(html)
    assert found, "the form has no idempotency key"
    return found.group(1)


def figures(html: str) -> dict[str, int]:
    """The balances a page shows, in whole sats."""
    return {k: int(re.sub(r"\D", "", v)) for k, v in _FIGURE.findall(html)}


async def api_balances(client: httpx.AsyncClient, shops: Shops) -> dict[str, int]:
    r = await client.get(f"/api/v1/wallets/{shops.carol_wallet}", headers=shops.key)
    assert r.status_code == 200, r.text
    b = r.json()
    return {k: b[f"{k}_msat"] // 1000 for k in ("available", "incoming", "held", "frozen")}


async def step_up(env: LnEnv, user_id: str) -> None:
    async with env.sessions() as s, s.begin():
        newest = max(await list_sessions(s, user_id=user_id), key=lambda r: r.created_at)
        await mark_stepped_up(s, session_id=newest.id)


async def withdrawals(env: LnEnv) -> int:
    async with env.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(Withdrawal))).scalar_one())


async def deposit(client: httpx.AsyncClient, mid: str, **form: str) -> str:
    """Ask the deposit page for an address or invoice; returns the text to pay."""
    page = await client.get(f"/dashboard/m/{mid}/deposit")
    assert page.status_code == 200, page.text
    r = await client.post(f"/dashboard/m/{mid}/deposit",
                          data={"csrf_token": csrf_of(page.text), **form})
    assert r.status_code == 303, r.text
    shown = await client.get(r.headers["location"])
    assert shown.status_code == 200
    assert '<img src="/api/v1/deposits/' in shown.text  # the QR
    found = re.search(r'id="pay-text">([^<]+)<', shown.text)
    assert found
    return found.group(1)


async def next_event(lines: AsyncIterator[str], wanted: str) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    async with asyncio.timeout(15):
        while True:
            line = await anext(lines)
            if not line:
                if frame.get("event") == wanted:
                    return frame
                frame = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                frame[key] = json.loads(value) if key == "data" else value


async def test_overview_shows_the_apis_balances_and_follows_a_payment_live(
        lnenv: LnEnv, shops: Shops, monkeypatch: pytest.MonkeyPatch) -> None:
    from satvault.web.routes import streams

    # The stream asks again at every frame whether the session may still see the wallet:
    # a live session keeps its stream.
    monkeypatch.setattr(streams, "RECHECK_SECONDS", 0.0)
    mid = shops.carol_merchant
    async with site(lnenv) as client:
        await sign_in(client, "carol@example.com")
        page = await client.get(f"/dashboard/m/{mid}")
        assert page.status_code == 200, page.text
        assert figures(page.text) == await api_balances(client, shops) == {
            "available": 0, "incoming": 0, "held": 0, "frozen": 0}
        assert "-t\">" in page.text and "-d\">" in page.text  # the charts' title and desc
        assert 'data-live-events="/dashboard/m/' in page.text

        async with client.stream("GET", f"/dashboard/m/{mid}/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            bolt11 = await deposit(client, mid, method="lightning", amount_sat="5000")
            lnenv.network.pay("customer1", bolt11)
            await settle_all(lnenv)
            event = await next_event(lines, "wallet.balance_changed")
            assert event["data"]["data"]["available_msat"] > 0

        fragment = await client.get(f"/dashboard/m/{mid}/balances")
        assert fragment.status_code == 200
        shown, api = figures(fragment.text), await api_balances(client, shops)
        assert shown == api and 0 < api["available"] <= 5000

        # The chart's numbers: today's Lightning volume in is what was paid.
        async with lnenv.sessions() as s:
            today = utcnow().date()
            days = await daily_volume(s, wallet_id=shops.carol_wallet,
                                      start=today - timedelta(days=29), end=today)
        assert len(days) == 30
        assert days[-1].in_msat == {"onchain": 0, "lightning": 5_000_000, "internal": 0}
        assert sum(d.total_msat for d in days[:-1]) == 0
        page = await client.get(f"/dashboard/m/{mid}")
        assert f"<th scope=\"row\">{today.isoformat()}</th>" in page.text
        assert "5,000" in page.text.split(today.isoformat())[1].split("</tr>")[0]

        # Nobody else's stream: another merchant's id is 404, signed out goes to sign-in.
        assert (await client.get(f"/dashboard/m/{shops.dave_merchant}/events")).status_code \
            == 404
    async with site(lnenv) as anon:
        r = await anon.get(f"/dashboard/m/{mid}/events")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_invoice_conversion_counts_created_and_settled(lnenv: LnEnv,
                                                            shops: Shops) -> None:
    from satvault.invoices.stats import daily_conversion

    async with site(lnenv) as client:
        made = []
        for amount in ("1000", "2000"):
            r = await client.post(f"/api/v1/stores/{shops.store}/invoices",
                                  json={"amount": amount, "currency": "SATS"},
                                  headers={**shops.key, "Idempotency-Key": uuid.uuid4().hex})
            assert r.status_code == 201, r.text
            made.append(r.json())
        lnenv.network.pay("customer1", made[0]["payment_methods"]["lightning"]["bolt11"])
        await settle_all(lnenv)
        today = utcnow().date()
        async with lnenv.sessions() as s:
            days = await daily_conversion(s, merchant_id=shops.carol_merchant,
                                          start=today - timedelta(days=1), end=today)
            other = await daily_conversion(s, merchant_id=shops.dave_merchant,
                                           start=today, end=today)
        assert [(d.created, d.settled) for d in days] == [(0, 0), (2, 1)]
        assert [(d.created, d.settled) for d in other] == [(0, 0)]


async def test_deposit_on_chain_then_withdraw_with_step_up_once(lnenv: LnEnv,
                                                               shops: Shops) -> None:
    mid = shops.carol_merchant
    async with site(lnenv) as client:
        await sign_in(client, "carol@example.com")
        address = await deposit(client, mid, method="onchain", amount_sat="")
        assert address.startswith("bcrt1")
        lnenv.chain.pay(address, 150_000)  # above what is credited unconfirmed
        await settle_all(lnenv)
        incoming = figures((await client.get(f"/dashboard/m/{mid}/balances")).text)
        assert incoming == await api_balances(client, shops)
        assert incoming["incoming"] == 150_000 and incoming["available"] == 0
        lnenv.chain.mine(1)
        await settle_all(lnenv)
        before = await api_balances(client, shops)
        assert before["available"] == 150_000 and before["incoming"] == 0
        assert figures((await client.get(f"/dashboard/m/{mid}")).text) == before

        form = await client.get(f"/dashboard/m/{mid}/withdraw")
        assert form.status_code == 200
        csrf, key = csrf_of(form.text), key_of(form.text)
        data = {"csrf_token": csrf, "idempotency_key": key, "rail": "onchain",
                "destination": DEST, "amount_sat": "20,000"}  # separators of thousands: fine
        # Without a recent step-up: off to the step-up page, and back to this form after.
        r = await client.post(f"/dashboard/m/{mid}/withdraw", data=data)
        assert r.status_code == 303
        assert r.headers["location"] == f"/account/step-up?next=/dashboard/m/{mid}/withdraw"
        assert await withdrawals(lnenv) == 0

        await step_up(lnenv, shops.carol)
        # Without the CSRF token: refused, nothing changed.
        r = await client.post(f"/dashboard/m/{mid}/withdraw",
                              data={k: v for k, v in data.items() if k != "csrf_token"})
        assert r.status_code == 403
        assert await withdrawals(lnenv) == 0

        # Bad input: the form again, with the message and what was typed; nothing changed.
        lnenv.network.advance_time(-7200)
        expired = lnenv.network.create_invoice("customer1", 1_000_000, expiry=60).bolt11
        lnenv.network.advance_time(7200)
        for rail, destination, amount, status, message in [
            ("onchain", "not-an-address", "1000", 422, "address"),
            ("onchain", MAINNET, "1000", 422, "mainnet"),
            ("onchain", DEST, "1", 422, "dust"),
            ("onchain", DEST, "-5", 422, "positive"),
            # A comma or space that separates no thousands is refused, never dropped (found
            # from outside: "0,5" was read as 5 sats, "1,5" as 15).
            ("onchain", DEST, "20,00", 422, "whole, positive number"),
            ("onchain", DEST, "1,5", 422, "whole, positive number"),
            ("onchain", DEST, "200 00", 422, "whole, positive number"),
            ("onchain", DEST, "20.000", 422, "whole, positive number"),
            ("onchain", DEST, "9999999999999999", 422, "out of range"),
            ("onchain", DEST, "400000", 422, "not enough available money"),
            ("onchain", DEST, "", 422, "amount"),
            ("bolt11", expired, "", 422, "expired"),
            ("lnaddress", DEST, "1000", 422, "Lightning Address"),
        ]:
            page = await client.get(f"/dashboard/m/{mid}/withdraw")
            bad = {**data, "idempotency_key": key_of(page.text),
                   "rail": rail, "destination": destination, "amount_sat": amount}
            r = await client.post(f"/dashboard/m/{mid}/withdraw", data=bad)
            error = form_error(r.text)
            assert r.status_code == status, (destination, amount, error)
            assert message.lower() in error.lower(), (destination, error)
            assert f'value="{destination}"' in r.text.replace("&#34;", '"')
            assert key_of(r.text) != bad["idempotency_key"]  # a new request, a new key
        assert await withdrawals(lnenv) == 0
        assert await api_balances(client, shops) == before

        # With the step-up: created; the same form submitted twice pays once.
        first = await client.post(f"/dashboard/m/{mid}/withdraw", data=data)
        assert first.status_code == 303, first.text
        second = await client.post(f"/dashboard/m/{mid}/withdraw", data=data)
        assert second.status_code == 303
        assert first.headers["location"] == second.headers["location"]
        assert await withdrawals(lnenv) == 1
        after = await api_balances(client, shops)
        assert after["held"] >= 20_000 and after["available"] == 150_000 - after["held"]
        detail = await client.get(first.headers["location"])
        assert detail.status_code == 200
        assert 'data-status="pending"' in detail.text and DEST in detail.text
        listing = await client.get(f"/dashboard/m/{mid}/withdraw")
        assert listing.text.count('data-status="pending"') == 1
        wid = first.headers["location"].rsplit("/", 1)[1]

        # Lightning: a BOLT11 from elsewhere.
        bolt11 = lnenv.network.create_invoice("customer1", 1_000_000).bolt11
        page = await client.get(f"/dashboard/m/{mid}/withdraw")
        r = await client.post(f"/dashboard/m/{mid}/withdraw", data={
            **data, "idempotency_key": key_of(page.text),
            "rail": "bolt11", "destination": bolt11, "amount_sat": ""})
        assert r.status_code == 303, r.text
        assert await withdrawals(lnenv) == 2

    # Dave sees none of it: every page of Carol's merchant, and her withdrawal, is 404.
    async with site(lnenv) as other:
        await sign_in(other, "dave@example.com")
        await step_up(lnenv, shops.dave)
        for path in ("", "/balances", "/statement", "/statement.csv", "/deposit", "/withdraw",
                     f"/withdrawals/{wid}", "/events"):
            r = await other.get(f"/dashboard/m/{mid}{path}")
            assert r.status_code == 404, path
        r = await other.get(f"/dashboard/m/{shops.dave_merchant}/withdrawals/{wid}")
        assert r.status_code == 404
        own = await other.get(f"/dashboard/m/{shops.dave_merchant}/withdraw")
        token = csrf_of(own.text)
        for path, form in [("/deposit", {"method": "onchain"}),
                           ("/withdraw", {**data, "csrf_token": token})]:
            r = await other.post(f"/dashboard/m/{mid}{path}",
                                 data={"csrf_token": token, **form})
            assert r.status_code == 404, path
        assert await withdrawals(lnenv) == 2


async def test_withdraw_to_a_lightning_address(lnenv: LnEnv, shops: Shops) -> None:
    """Carol pays dave@<this host> from the withdrawal page: LUD-16 resolution, the LNURL-pay
    callback, Dave's own invoice, settled inside the ledger."""
    from satvault.web.app import create_app

    lnenv.settings.public_url = "http://lnurl.test"
    mid = shops.carol_merchant
    async with lnenv.sessions() as s, s.begin():
        dave_wallet = await acc.ensure_wallet(s, owner_type="merchant",
                                              owner_id=shops.dave_merchant)
        _, dave_key = await acc.create_api_key(s, owner_id=shops.dave_merchant,
                                               scopes=["wallet:read", "wallet:write"])
    dave = {"Authorization": f"Bearer {dave_key}"}
    app = create_app(lnenv.settings, engine=lnenv.sessions.kw["bind"], start_workers=False,
                     runtime=lnenv.runtime)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=transport, base_url="http://lnurl.test") as client:
        app.state.lnurl_http = client
        r = await client.post(f"/api/v1/wallets/{dave_wallet.id}/lightning-address",
                              headers=dave, json={"username": "dave"})
        assert r.status_code == 201, r.text
        await sign_in(client, "carol@example.com")
        bolt11 = await deposit(client, mid, method="lightning", amount_sat="10000")
        lnenv.network.pay("customer1", bolt11)
        await settle_all(lnenv)
        await step_up(lnenv, shops.carol)

        page = await client.get(f"/dashboard/m/{mid}/withdraw")
        data = {"csrf_token": csrf_of(page.text), "idempotency_key": key_of(page.text),
                "rail": "lnaddress", "destination": "dave@lnurl.test", "amount_sat": "2000"}
        r = await client.post(f"/dashboard/m/{mid}/withdraw", data=data)
        assert r.status_code == 303, form_error(r.text)
        detail = await client.get(r.headers["location"])
        assert 'data-status="confirmed"' in detail.text and "Internal" in detail.text
        r = await client.get(f"/api/v1/wallets/{dave_wallet.id}", headers=dave)
        assert r.json()["available_msat"] == 2_000_000
        # Without an amount: the form again, nothing sent.
        page = await client.get(f"/dashboard/m/{mid}/withdraw")
        r = await client.post(f"/dashboard/m/{mid}/withdraw", data={
            **data, "csrf_token": csrf_of(page.text), "idempotency_key": key_of(page.text),
            "amount_sat": ""})
        assert r.status_code == 422 and "amount" in form_error(r.text).lower()
        assert await withdrawals(lnenv) == 1
