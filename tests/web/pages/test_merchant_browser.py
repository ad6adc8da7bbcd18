"""The merchant overview in a real browser (Debian's Chromium driven by Playwright, the app
served by uvicorn over simnet and the Lightning simulator): the owner signs in, asks for a
Lightning invoice on the deposit page, opens the overview, the invoice is paid, and the
available balance changes on the open page without a reload (its event stream).

Without ``/usr/bin/chromium`` the test skips, or fails when ``SATVAULT_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.chainenv import LnEnv
from tests.checkout.conftest import make_app, settle_all
from tests.checkout.test_browser import TIMEOUT_MS
from tests.liveserver import chromium, require_browser, serve, sqlite_copy
from tests.web.pages.conftest import PASSWORD
from tests.web.pages.merchant_env import Shops, shops_fixture  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    require_browser()


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: the page is the subject; test_merchant_money covers both databases."""
    return sqlite_copy(tmp_path, sqlite_template)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"rate_limit_enabled": False}


async def test_overview_balance_changes_without_reload(lnenv: LnEnv, shops: Shops) -> None:
    from playwright.async_api import expect

    mid = shops.carol_merchant
    app = make_app(lnenv)
    async with app.router.lifespan_context(app), serve(app) as base, chromium() as browser:
        context = await browser.new_context(viewport={"width": 360, "height": 800},
                                            locale="en-US")
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        streams: list[int] = []
        page.on("response", lambda r: streams.append(r.status)
                if r.url.endswith(f"/dashboard/m/{mid}/events") else None)

        await page.goto(f"{base}/login?next=/dashboard/m/{mid}/deposit")
        await page.get_by_label("E-mail").fill("carol@example.com")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_label("Amount in sats", exact=True).fill("5000")
        await page.get_by_role("button", name="Create a Lightning invoice").click()
        bolt11 = (await page.locator("#pay-text").inner_text()).strip()
        assert bolt11.startswith("lnbcrt")

        await page.goto(f"{base}/dashboard/m/{mid}")
        available = page.locator('[data-balance="available"]')
        await expect(available).to_have_text("0 sats")
        await page.evaluate("window.__sameDocument = true")
        async with asyncio.timeout(10):  # the page's event stream answered
            while 200 not in streams:
                await asyncio.sleep(0.1)

        lnenv.network.pay("customer1", bolt11)
        await settle_all(lnenv)
        await expect(available).not_to_have_text("0 sats")
        assert await page.evaluate("window.__sameDocument === true")  # no reload
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "merchant-overview-phone.png"),
                              full_page=True)
        assert errors == [], "\n".join(errors)
