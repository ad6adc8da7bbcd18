"""The checkout page over HTTP: every language, language negotiation, the public status
document through a payment's life, QR codes, 404s, and that nothing comes from elsewhere."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest

from satvault.checkout.i18n import LANGUAGES, format_btc, format_fiat
from satvault.db import utcnow
from satvault.invoices.models import StoreInvoice
from tests.chainenv import LnEnv
from tests.checkout.conftest import Shop, client, new_invoice, settle_all

SHOP_URL = "https://shop.example/thanks?order=42&x=<y>"
WAITING = {"en": "Waiting for payment", "zh": "等待付款", "ja": "お支払いをお待ちしています",
           "nl": "Wachten op betaling", "th": "รอการชำระเงิน", "fr": "En attente du paiement"}


def config_of(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="checkout-config">(.*?)</script>',
                  html, re.S)
    assert m, "the page embeds its config"
    return json.loads(m.group(1))


def html_lang(html: str) -> str:
    m = re.search(r'<html lang="([^"]+)"', html)
    assert m
    return m.group(1)


async def test_page_in_every_language(lnenv: LnEnv, shop: Shop):
    async with client(lnenv) as c:
        inv = await new_invoice(c, shop, amount="10.00", currency="USD", redirect_url=SHOP_URL)
        sat = -(-inv["amount_msat"] // 1000)
        for code, lang in LANGUAGES.items():
            r = await c.get(f"/i/{inv['id']}", params={"lang": code})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/html")
            html = r.text
            assert html_lang(html) == lang.tag
            assert WAITING[code] in html
            assert format_btc(sat, lang) in html  # 0.00016667 / 0,00016667
            assert format_fiat(Decimal("10.00"), "USD", lang) in html
            assert "Satoshi Coffee" in html
            cfg = config_of(html)
            assert cfg["lang"] == lang.tag
            assert cfg["messages"]["waiting.title"] == WAITING[code]
            assert cfg["status"]["state"] == "waiting"
            assert f'aria-current="true">{lang.name}<' in html
        assert "0.00016667" in (await c.get(f"/i/{inv['id']}?lang=en")).text
        assert "0,00016667" in (await c.get(f"/i/{inv['id']}?lang=fr")).text


@pytest.mark.parametrize(("accept", "query", "meta", "want"), [
    (None, None, None, "en"),
    ("nl-BE,nl;q=0.9,en;q=0.8", None, None, "nl"),
    ("da, ja;q=0.5, en;q=0.4", None, None, "ja"),
    ("de;q=1.0, th;q=0.2, fr;q=0.7", None, None, "fr"),
    ("zh-CN,zh;q=0.9", None, None, "zh"),
    ("zh-Hant-TW", None, None, "zh"),
    ("*", None, None, "en"),
    ("fr;q=0, de", None, None, "en"),
    ("fr", None, "th", "th"),  # the invoice's language beats the browser's
    ("fr", "ja", "th", "ja"),  # ?lang= beats both
    ("fr", "xx", "th", "th"),  # an unknown ?lang= is ignored
    ("fr", None, "klingon", "fr"),
])
async def test_language_choice(lnenv: LnEnv, shop: Shop, accept, query, meta, want):
    async with client(lnenv) as c:
        inv = await new_invoice(c, shop, amount="1000", currency="SATS",
                                metadata={"lang": meta} if meta else None)
        headers = {"Accept-Language": accept} if accept else {}
        r = await c.get(f"/i/{inv['id']}", headers=headers,
                        params={"lang": query} if query else None)
        assert r.status_code == 200
        assert html_lang(r.text) == LANGUAGES[want].tag
        assert WAITING[want] in r.text


async def test_status_through_partial_payment_confirmations_and_settlement(lnenv: LnEnv,
                                                                           shop: Shop):
    env = lnenv
    async with client(env) as c:
        inv = await new_invoice(c, shop, amount="50000", currency="SATS", speed_policy=2,
                                order_id="secret-order", metadata={"customer": "x"})
        url = f"/i/{inv['id']}/status"
        r = await c.get(url)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        st = r.json()
        assert set(st) == {"id", "status", "additional_status", "state", "amount_msat",
                           "paid_msat", "seen_msat", "due_msat", "confirmations", "expires_at",
                           "now", "destinations", "redirect_url"}
        assert (st["status"], st["state"], st["due_msat"]) == ("new", "waiting", 50_000_000)
        assert "secret-order" not in r.text and "customer" not in r.text
        d = st["destinations"]
        assert d["bip21"].startswith("bitcoin:") and "&lightning=LNBCRT" in d["bip21"]
        assert d["onchain_uri"].startswith("bitcoin:") and "lightning=" not in d["onchain_uri"]
        assert d["onchain_amount_sat"] == 50_000 and d["lightning_amount_msat"] == 50_000_000
        assert d["lightning_uri"] == f"lightning:{d['bolt11']}"
        assert d["address"] == inv["payment_methods"]["onchain"]["address"]
        first_version = d["version"]

        env.chain.pay(d["address"], 20_000)  # a partial payment, then a block
        env.chain.mine(1)
        await settle_all(env)
        st = (await c.get(url)).json()
        assert (st["status"], st["additional_status"], st["state"]) == (
            "new", "paid_partial", "partial")
        assert st["due_msat"] == 30_000_000 and st["confirmations"] is None
        d = st["destinations"]
        assert d["onchain_amount_sat"] == 30_000 and d["lightning_amount_msat"] == 30_000_000
        assert d["version"] != first_version  # the page reloads its QR codes
        page = (await c.get(f"/i/{inv['id']}?lang=en")).text
        assert "Partly paid" in page and "0.00030000 BTC still due" in page

        env.chain.pay(d["onchain_uri"])  # the rest, on-chain, unconfirmed
        await settle_all(env)
        st = (await c.get(url)).json()
        assert (st["status"], st["state"]) == ("processing", "received")
        assert st["confirmations"] == {"count": 0, "required": 2}
        assert st["destinations"]["bip21"] is None and st["due_msat"] == 0
        env.chain.mine(1)
        await settle_all(env)
        st = (await c.get(url)).json()
        assert (st["status"], st["state"]) == ("processing", "confirming")
        assert st["confirmations"] == {"count": 1, "required": 2}
        page = (await c.get(f"/i/{inv['id']}?lang=nl")).text
        assert "Wachten op bevestigingen: 1 van 2." in page
        env.chain.mine(1)
        await settle_all(env)
        st = (await c.get(url)).json()
        assert (st["status"], st["state"], st["paid_msat"]) == ("settled", "paid", 50_000_000)
        assert all(v is None for k, v in st["destinations"].items() if k != "version")
        for kind in ("unified", "onchain", "lightning"):
            assert (await c.get(f"/i/{inv['id']}/qr/{kind}.svg")).status_code == 404
    await env.check()


async def test_lightning_payment_and_redirect(lnenv: LnEnv, shop: Shop):
    env = lnenv
    async with client(env) as c:
        inv = await new_invoice(c, shop, amount="0.0002", redirect_url=SHOP_URL)
        page = (await c.get(f"/i/{inv['id']}")).text
        assert 'data-role="back" hidden' in page  # no way back while waiting for payment
        env.network.pay("customer1", inv["payment_methods"]["lightning"]["bolt11"])
        await settle_all(env)
        st = (await c.get(f"/i/{inv['id']}/status")).json()
        assert (st["state"], st["redirect_url"]) == ("paid", SHOP_URL)
        page = (await c.get(f"/i/{inv['id']}?lang=ja")).text
        assert "お支払い完了" in page
        assert 'href="https://shop.example/thanks?order=42&amp;x=&lt;y&gt;"' in page
        assert "<y>" not in page.split("checkout-config")[0]  # escaped everywhere in the HTML


async def test_expired_invoice(lnenv: LnEnv, shop: Shop):
    env = lnenv
    async with client(env) as c:
        inv = await new_invoice(c, shop, amount="1000", currency="SATS", expiration_minutes=1)
        async with env.sessions() as s, s.begin():
            row = await s.get(StoreInvoice, inv["id"])
            assert row is not None
            row.expires_at = utcnow() - timedelta(seconds=1)
        await settle_all(env)
        st = (await c.get(f"/i/{inv['id']}/status")).json()
        assert (st["status"], st["state"]) == ("expired", "expired")
        assert st["destinations"]["bip21"] is None  # nothing to pay into any more
        page = (await c.get(f"/i/{inv['id']}?lang=th")).text
        assert "ใบแจ้งหนี้หมดอายุ" in page
        assert re.search(r'<section class="pay" data-role="pay"[^>]*hidden>', page)
        assert (await c.get(f"/i/{inv['id']}/qr/unified.svg")).status_code == 404


async def test_qr_codes_and_single_method_invoices(lnenv: LnEnv, shop: Shop):
    async with client(lnenv) as c:
        both = await new_invoice(c, shop, amount="1000", currency="SATS")
        for kind in ("unified", "onchain", "lightning"):
            r = await c.get(f"/i/{both['id']}/qr/{kind}.svg")
            assert r.status_code == 200, (kind, r.text)
            assert r.headers["content-type"] == "image/svg+xml"
            assert r.content.lstrip().startswith(b"<svg") and b"<path" in r.content
            assert b"http://" not in r.content.replace(b"http://www.w3.org/2000/svg", b"")
        assert (await c.get(f"/i/{both['id']}/qr/other.svg")).status_code == 422
        page = (await c.get(f"/i/{both['id']}")).text
        assert page.count('role="tab"') == 3 and page.count('data-qr="') == 3

        ln_only = await new_invoice(c, shop, amount="1000", currency="SATS",
                                    payment_methods=["lightning"])
        st = (await c.get(f"/i/{ln_only['id']}/status")).json()
        assert st["destinations"]["bip21"] == f"lightning:{st['destinations']['bolt11']}"
        assert st["destinations"]["address"] is None
        page = (await c.get(f"/i/{ln_only['id']}")).text
        assert 'role="tab"' not in page and page.count('data-qr="') == 1
        assert (await c.get(f"/i/{ln_only['id']}/qr/unified.svg")).status_code == 200
        assert (await c.get(f"/i/{ln_only['id']}/qr/onchain.svg")).status_code == 404

        chain_only = await new_invoice(c, shop, amount="1000", currency="SATS",
                                       payment_methods=["onchain"])
        st = (await c.get(f"/i/{chain_only['id']}/status")).json()
        assert st["destinations"]["bolt11"] is None
        assert "lightning=" not in st["destinations"]["bip21"]
        page = (await c.get(f"/i/{chain_only['id']}")).text
        assert 'role="tab"' not in page and 'data-qr="unified"' in page
        assert (await c.get(f"/i/{chain_only['id']}/qr/lightning.svg")).status_code == 404


async def test_unknown_invoice(lnenv: LnEnv):
    async with client(lnenv) as c:
        r = await c.get("/i/inv_doesnotexist", headers={"Accept-Language": "fr-FR"})
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert "Facture introuvable" in r.text and html_lang(r.text) == "fr"
        r = await c.get("/i/inv_doesnotexist?lang=zh")
        assert r.status_code == 404 and "未找到账单" in r.text
        assert (await c.get("/i/" + "x" * 500)).status_code == 404
        r = await c.get("/i/inv_doesnotexist/status")
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert (await c.get("/i/inv_doesnotexist/qr/unified.svg")).status_code == 404
        assert (await c.get("/checkout/static/../routes.py")).status_code == 404
        assert (await c.get("/checkout/static/nothing.js")).status_code == 404


URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""", re.I)


async def test_nothing_comes_from_elsewhere(lnenv: LnEnv, shop: Shop):
    async with client(lnenv) as c:
        inv = await new_invoice(c, shop, amount="10.00", currency="EUR",
                                redirect_url="https://shop.example/back")
        r = await c.get(f"/i/{inv['id']}", headers={"Accept-Language": "ja"})
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert r.headers["referrer-policy"] == "no-referrer"
        found = set(URL.findall(r.text))
        assert found <= {"https://shop.example/back"}, found
        # Every resource the page loads is a path on this server.
        for attr in re.findall(r'\b(?:src|href)="([^"]*)"', r.text):
            assert attr.startswith(("/", "?", "#", "bitcoin:", "lightning:", "data:",
                                    "https://shop.example/back")), attr
        cfg = config_of(r.text)
        assert cfg["events_url"] == f"/api/v1/events/stream?invoice_id={inv['id']}"
        assert cfg["status_url"] == f"/i/{inv['id']}/status"
        assets = re.findall(r'(?:src|href)="(/checkout/static/[^"]+)"', r.text)
        assert len(assets) == 3  # css, js, noscript css
        for path in assets:
            a = await c.get(path)
            assert a.status_code == 200, path
            assert a.headers["content-type"].split(";")[0] in ("text/css", "text/javascript")
            body = a.text
            assert not re.findall(r"https?://", body, re.I), path
            assert "@import" not in body and "url(" not in body
            if ".js?" in path:  # it talks only to the URLs the page gives it
                assert "fetch(cfg.status_url" in body and "EventSource(cfg.events_url)" in body


async def test_static_assets_are_versioned(lnenv: LnEnv, shop: Shop):
    async with client(lnenv) as c:
        inv = await new_invoice(c, shop, amount="1000", currency="SATS")
        page = (await c.get(f"/i/{inv['id']}")).text
        css = re.search(r'href="(/checkout/static/checkout\.css\?v=[0-9a-f]{10})"', page)
        js = re.search(r'src="(/checkout/static/checkout\.js\?v=[0-9a-f]{10})" defer', page)
        assert css and js
        r = await c.get(js.group(1))
        assert r.headers["content-type"].startswith("text/javascript")
        assert "max-age" in r.headers["cache-control"]


CANCELLED = {"en": "Invoice cancelled", "fr": "Facture annulée", "nl": "Factuur geannuleerd",
             "ja": "請求書は取り消されました", "zh": "账单已取消", "th": "ใบแจ้งหนี้ถูกยกเลิก"}


async def test_an_invoice_the_shop_voided_says_so(lnenv: LnEnv, shop: Shop):
    """Found from outside: an unpaid invoice the merchant marked invalid told the customer
    "the payment was not confirmed in time", of a payment they never made. It now says the
    shop cancelled it, and, once a payment had arrived, to ask the shop about it."""
    env = lnenv
    async with client(env) as c:
        unpaid = await new_invoice(c, shop, amount="1000", currency="SATS")
        paid = await new_invoice(c, shop, amount="1000", currency="SATS")
        env.chain.pay(paid["payment_methods"]["onchain"]["bip21"])  # seen, not confirmed
        await settle_all(env)
        assert (await c.get(f"/i/{paid['id']}/status")).json()["state"] == "received"
        for inv in (unpaid, paid):
            r = await c.post(f"/api/v1/invoices/{inv['id']}/mark", json={"status": "invalid"},
                             headers=shop.key)
            assert r.status_code == 200, r.text
        st = (await c.get(f"/i/{unpaid['id']}/status")).json()
        assert (st["status"], st["additional_status"], st["state"]) == (
            "invalid", "marked", "invalid_cancelled")
        assert st["destinations"]["bip21"] is None
        st = (await c.get(f"/i/{paid['id']}/status")).json()
        assert st["state"] == "invalid_cancelled_paid"
        for code, title in CANCELLED.items():
            page = (await c.get(f"/i/{unpaid['id']}?lang={code}")).text
            assert title in page, code
            assert config_of(page)["messages"]["invalid_cancelled.title"] == title
            assert re.search(r'<section class="pay" data-role="pay"[^>]*hidden>', page)
        en = (await c.get(f"/i/{unpaid['id']}?lang=en")).text
        assert "not confirmed" not in en.split("checkout-config")[0]
        assert "The shop cancelled this invoice." in en and "send any payment to it" in en
        en = (await c.get(f"/i/{paid['id']}?lang=en")).text
        assert "contact the shop about the payment you sent" in en.split("checkout-config")[0]
        # The page's script is told which states never change again, and listens for every
        # invoice event the platform sends (a reversal included).
        cfg = config_of(en)
        assert set(cfg["final_states"]) == {"invalid", "invalid_cancelled",
                                            "invalid_cancelled_paid"}
        assert "invoice.payment_reversed" in cfg["events"]


async def test_a_stored_redirect_with_credentials_is_no_way_back(lnenv: LnEnv, shop: Shop):
    """Found from outside: a redirect URL with credentials before the host reads as the shop's
    and leads elsewhere. Creation refuses it now; one stored before is not shown, neither as
    the page's link nor in its status document (whose script would go there)."""
    env = lnenv
    async with client(env) as c:
        inv = await new_invoice(c, shop, amount="0.0002", redirect_url=SHOP_URL)
        async with env.sessions() as s, s.begin():
            row = await s.get(StoreInvoice, inv["id"])
            assert row is not None
            row.redirect_url = "https://shop.example@evil.example/"
        env.network.pay("customer1", inv["payment_methods"]["lightning"]["bolt11"])
        await settle_all(env)
        st = (await c.get(f"/i/{inv['id']}/status")).json()
        assert (st["state"], st["redirect_url"]) == ("paid", None)
        page = (await c.get(f"/i/{inv['id']}")).text
        assert "evil.example" not in page and 'data-role="back" hidden' in page
