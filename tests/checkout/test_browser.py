"""The checkout page in a real browser: Debian's Chromium driven by Playwright against the app
served by uvicorn on 127.0.0.1, with its workers, over simnet and the Lightning simulator.

A customer opens the page, pays, and watches it change without reloading: in English on-chain
(received → paid → back to the shop, live updates over the event stream), and in Chinese on a
phone, partly on-chain and the rest over Lightning with the page's updated invoice, with the
event stream blocked so the page must poll. Screenshots go to ``test-artifacts/checkout-*.png``.

Without ``/usr/bin/chromium`` the tests skip, or fail when ``SATVAULT_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from satvault.kernel.clock import FakeClock
from tests.chainenv import LnEnv
from tests.checkout.conftest import Shop, make_app
from tests.liveserver import chromium, require_browser, sqlite_copy
from tests.liveserver import serve as live

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SHOP = "https://shop.example"
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    """Before anything else is set up: skip (or fail) at once without a browser."""
    require_browser()


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: the page is the subject here; test_page covers both databases."""
    return sqlite_copy(tmp_path, sqlite_template)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"watcher_interval": 0.2}


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """The app with its workers, served on a free 127.0.0.1 port in this event loop."""
    async with live(app, lifespan=True) as base:
        yield base


async def create_invoice(base: str, shop: Shop, **body: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post(f"/api/v1/stores/{shop.store}/invoices", json=body,
                         headers={**shop.key, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    invoice: dict[str, Any] = r.json()
    return invoice


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"checkout-{name}.png"), full_page=True)


async def test_english_onchain_payment_live_then_back_to_the_shop(lnenv: LnEnv, shop: Shop,
                                                                 clock: FakeClock):
    from playwright.async_api import expect

    env = lnenv
    async with serve(make_app(env, start_workers=True)) as base, chromium() as browser:
        inv = await create_invoice(base, shop, amount="25.00", currency="USD",
                                   redirect_url=f"{SHOP}/thanks?order=42")
        context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                            locale="en-US",
                                            permissions=["clipboard-read", "clipboard-write"])
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        streams: list[int] = []  # the event stream answered (updates need not wait for a poll)
        page.on("response", lambda r: streams.append(r.status) if "/events/stream" in r.url
                else None)
        await page.route(f"{SHOP}/**", lambda route: route.fulfill(
            status=200, content_type="text/html", body="<h1>Thanks for your order</h1>"))

        await page.goto(f"{base}/i/{inv['id']}")
        title = page.locator("[data-role=title]")
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await expect(title).to_have_text("Waiting for payment")
        await expect(page.locator("[data-role=countdown-text]")).to_have_text(
            re.compile(r"^Expires in 1[45]:\d\d$"))
        await expect(page.locator(".asked")).to_contain_text("$25.00")
        await expect(page.locator("img[data-qr=unified]")).to_be_visible()
        await shot(page, "en-desktop-waiting")
        await page.evaluate("window.__sameDocument = true")

        # Tabs and copy buttons.
        await page.get_by_role("tab", name="On-chain").click()
        await expect(page.locator("#panel-onchain")).to_be_visible()
        await expect(page.locator("#panel-unified")).to_be_hidden()
        address = inv["payment_methods"]["onchain"]["address"]
        await expect(page.locator("#address")).to_have_value(address)
        copy = page.locator("button[data-copy=address]")
        await copy.click()
        await expect(copy).to_have_text("Copied")
        assert await page.evaluate("navigator.clipboard.readText()") == address
        await page.get_by_role("tab", name="On-chain").press("ArrowRight")
        await expect(page.get_by_role("tab", name="Lightning")).to_be_focused()
        await expect(page.locator("#bolt11")).to_have_value(
            inv["payment_methods"]["lightning"]["bolt11"])
        await page.get_by_role("tab", name="Any wallet").click()

        await page.set_viewport_size(PHONE)
        await shot(page, "en-phone-waiting")
        await page.emulate_media(color_scheme="dark")
        await shot(page, "en-phone-dark")
        await page.emulate_media(color_scheme="light")
        other = await context.new_page()  # the other languages, for the eye
        await other.set_viewport_size(PHONE)
        for code, waiting in (("ja", "お支払いをお待ちしています"), ("th", "รอการชำระเงิน"),
                              ("fr", "En attente du paiement"), ("nl", "Wachten op betaling")):
            await other.goto(f"{base}/i/{inv['id']}?lang={code}")
            await expect(other.locator("[data-role=title]")).to_have_text(waiting)
            await shot(other, f"{code}-phone-waiting")
        await other.close()

        env.chain.pay(inv["payment_methods"]["onchain"]["bip21"])  # in the mempool
        await expect(title).to_have_text("Payment received")
        await expect(page.locator("[data-role=detail]")).to_have_text(
            "Waiting for confirmations: 0 of 1.")
        await expect(page.locator("[data-role=pay]")).to_be_hidden()
        await shot(page, "en-phone-received")

        env.chain.mine(1)
        await expect(title).to_have_text("Payment complete")
        assert await page.evaluate("window.__sameDocument") is True  # never reloaded
        await expect(page.locator("[data-role=redirecting]")).to_contain_text(
            "Returning to the shop in")
        await expect(page.get_by_role("link", name="Back to the shop")).to_be_visible()
        await shot(page, "en-phone-paid")

        # Meanwhile, another invoice runs out of time while its page is open.
        late = await create_invoice(base, shop, amount="1000", currency="SATS")
        other = await context.new_page()
        await other.set_viewport_size(PHONE)
        await other.goto(f"{base}/i/{late['id']}")
        await expect(other.locator("[data-role=title]")).to_have_text("Waiting for payment")
        clock.advance(minutes=16)  # past its 15 minutes; the workers notice on their own
        await expect(other.locator("[data-role=title]")).to_have_text("Invoice expired")
        await expect(other.locator("[data-role=pay]")).to_be_hidden()
        await shot(other, "en-phone-expired")
        await other.goto(f"{base}/i/inv_unknown")
        await expect(other.locator("h1")).to_have_text("Invoice not found")
        await shot(other, "en-phone-not-found")
        await other.close()

        await page.wait_for_url(f"{SHOP}/thanks?order=42", timeout=10_000)
        await expect(page.locator("h1")).to_have_text("Thanks for your order")
        assert any("/api/v1/events/stream?invoice_id=" in u for u in requested)
        assert 200 in streams, streams
        strangers = [u for u in requested if not u.startswith((base, SHOP, "data:"))]
        assert not strangers, strangers
        assert not errors, errors
        await context.close()
    await env.check()


async def test_chinese_phone_partial_then_lightning_by_polling(lnenv: LnEnv, shop: Shop):
    from playwright.async_api import expect

    env = lnenv
    async with serve(make_app(env, start_workers=True)) as base, chromium() as browser:
        inv = await create_invoice(base, shop, amount="50000", currency="SATS")
        context = await browser.new_context(viewport=PHONE, device_scale_factor=2,
                                            is_mobile=True, has_touch=True, locale="zh-CN")
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        statuses: list[str] = []
        page.on("request", lambda r: statuses.append(r.url) if "/status" in r.url else None)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # No event stream: the page must notice and poll.
        await page.route(re.compile(r".*/api/v1/events/stream.*"), lambda r: r.abort())

        await page.goto(f"{base}/i/{inv['id']}")  # the language comes from Accept-Language
        title = page.locator("[data-role=title]")
        await expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
        await expect(title).to_have_text("等待付款")
        await expect(page.locator("[data-role=countdown-text]")).to_contain_text("后过期")
        await page.get_by_role("tab", name="闪电网络").tap()
        await expect(page.locator("#panel-lightning")).to_be_visible()
        await shot(page, "zh-phone-lightning")
        await page.evaluate("window.__sameDocument = true")
        first_qr = await page.locator("img[data-qr=lightning]").get_attribute("src")

        env.chain.pay(inv["payment_methods"]["onchain"]["address"], 20_000)
        env.chain.mine(1)
        await expect(title).to_have_text("已部分付款")
        await expect(page.locator("[data-role=detail]")).to_contain_text("0.00030000 BTC")
        await expect(page.locator("img[data-qr=lightning]")).not_to_have_attribute(
            "src", first_qr or "")
        bolt11 = await page.locator("#bolt11").input_value()
        assert bolt11 and bolt11 != inv["payment_methods"]["lightning"]["bolt11"]
        await shot(page, "zh-phone-partial")

        env.network.pay("customer1", bolt11)  # the rest, with what the page shows now
        await expect(title).to_have_text("付款完成")
        thanks = "谢谢\uff01我们已收到您的付款。"  # a full-width exclamation mark
        await expect(page.locator("[data-role=detail]")).to_have_text(thanks)
        assert await page.evaluate("window.__sameDocument") is True
        await expect(page.locator("[data-role=back]")).to_be_hidden()  # no redirect_url
        await shot(page, "zh-phone-paid")
        assert len(statuses) >= 2  # updates came by polling
        assert not errors, errors
        await context.close()
    await env.check()


async def test_a_reorg_that_takes_the_payment_away_shows_on_the_open_page(lnenv: LnEnv,
                                                                         shop: Shop):
    """Found from outside: a page that said "Payment complete" stopped listening, so a reorg
    that sent the invoice back to waiting showed only after a reload. The page keeps a slow
    poll while paid; only the final states end it."""
    from playwright.async_api import expect

    env = lnenv
    async with serve(make_app(env, start_workers=True)) as base, chromium() as browser:
        inv = await create_invoice(base, shop, amount="30000", currency="SATS",
                                   payment_methods=["onchain"])
        context = await browser.new_context(viewport=PHONE, locale="en-US")
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{base}/i/{inv['id']}")
        title = page.locator("[data-role=title]")
        await expect(title).to_have_text("Waiting for payment")
        await page.evaluate("window.__sameDocument = true")

        txid = env.chain.pay(inv["payment_methods"]["onchain"]["address"], 30_000)
        env.chain.mine(1)
        await expect(title).to_have_text("Payment complete")
        env.chain.reorg(1, drop_txids=[txid])  # the block and the payment go away
        # The paid page polls every 5 times poll_ms (10 s): the reversal within one round.
        await expect(title).to_have_text("Waiting for payment", timeout=30_000)
        await expect(page.locator("[data-role=pay]")).to_be_visible()
        assert await page.evaluate("window.__sameDocument") is True  # never reloaded
        await shot(page, "en-phone-reversed")
        assert not errors, errors
        await context.close()
    await env.check()
