"""The admin console in a real browser (Debian's Chromium driven by Playwright, the app served
by uvicorn on 127.0.0.1): an operator approves a KYC upgrade from the queue, then a held
withdrawal is approved by two operators and goes on. Screenshots go to
``test-artifacts/admin-*.png``. Without ``/usr/bin/chromium`` the test skips (or fails when
``SATVAULT_REQUIRE_BROWSER=1``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from satvault.accounts.models import User
from satvault.auth.sessions import WebSession, mark_mfa
from satvault.kyc import requests as kyc_requests
from satvault.kyc import service as kyc
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.web.app import create_app
from tests.liveserver import chromium, require_browser, serve, sqlite_copy
from tests.web.pages.admin_support import (
    SAT,
    ask_withdrawal,
    live_policy,
    merchant_wallet,
    second_admin,
)
from tests.web.pages.conftest import PASSWORD, page_settings
from tests.web.pages.merchant_helpers import step_up

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 360, "height": 780}
TIMEOUT_MS = 15_000


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    require_browser()


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: the pages are the subject; the other admin tests cover both databases."""
    return sqlite_copy(tmp_path, sqlite_template)


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)


async def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now (injected by the
    test, hence the context's ``bypass_csp``; the pages themselves never load it)."""
    await page.add_script_tag(path=str(AXE))
    found: list[str] = await page.evaluate("""async () => (await axe.run()).violations
        .filter(v => v.impact === "serious" || v.impact === "critical")
        .map(v => v.id + ": " + v.nodes.map(n => n.target.join(" ")).join(", "))""")
    return found


async def operator(browser: Any, base: str, sessions: Any, email: str, *,
                   viewport: dict[str, int] | None = None) -> Any:
    """A page signed in as ``email`` through the form, its second factor then marked (what
    the TOTP step does once it lands)."""
    context = await browser.new_context(viewport=viewport or {"width": 1280, "height": 900},
                                        locale="en-US", bypass_csp=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(f"{base}/login")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: "/login" not in url)  # signed in
    async with sessions() as s, s.begin():
        row = (await s.execute(select(WebSession).join(User).where(User.email == email)
                               .order_by(WebSession.created_at.desc()).limit(1))).scalar_one()
        await mark_mfa(s, session_id=row.id)
    return page


async def test_approve_a_kyc_upgrade_and_a_held_withdrawal(engine, db_url, people, sessions):
    from playwright.async_api import expect

    ops = await second_admin(sessions)
    await live_policy(sessions, admins=(people.root, ops), approvers=[people.root, ops],
                      rules=[{"name": "large", "action": "require_approval", "approvals": 2,
                              "group": "treasury", "min_amount_msat": 50_000 * SAT}])
    settings = page_settings(db_url)
    wallet = await merchant_wallet(sessions, people.alice_merchant, sat=500_000)
    wd = await ask_withdrawal(sessions, settings, wallet, 100_000, initiator=people.alice)
    async with sessions() as s, s.begin():
        request = await kyc_requests.request_upgrade(
            s, owner_type="merchant", owner_id=people.alice_merchant, tier=1,
            full_name="Alice's Shop Ltd", documents=["docstore://registry/42"],
            requested_by=people.alice, max_tier=3)

    app = create_app(settings, engine=engine, start_workers=False)
    errors: list[str] = []
    async with serve(app, lifespan=True) as base, chromium() as browser:
        page = await operator(browser, base, sessions, "root@example.com")
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{base}/admin")
        await expect(page.locator("#kyc-count")).to_have_text("1")
        await expect(page.locator("#approval-count")).to_have_text("1")
        await shot(page, "home")

        await page.get_by_role("link", name="KYC queue").first.click()
        await page.get_by_role("link", name=f"Review request {request.id}").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            f"KYC request {request.id}")
        await page.get_by_label("business-registration").check()
        await page.get_by_label("Note").fill("registry extract checked")
        await shot(page, "kyc-request")
        await page.get_by_role("button", name="Approve tier 1").click()
        await expect(page.get_by_role("status")).to_contain_text("Approved")
        await expect(page.get_by_text("No request is waiting.")).to_be_visible()

        # An approval releases money: the operators stepped up (what the step-up page does
        # once a code passes; the journey test goes through that page).
        await step_up(sessions, people.root)
        await page.goto(f"{base}/admin/approvals")
        await page.get_by_role("button", name=f"Approve withdrawal {wd.id}").click()
        await expect(page.get_by_role("status")).to_contain_text("more approvals are needed")
        await expect(page.get_by_text("1 of 2")).to_be_visible()
        await shot(page, "approvals")

        second = await operator(browser, base, sessions, "ops@example.com")
        await step_up(sessions, ops)
        await second.goto(f"{base}/admin/approvals")
        await second.get_by_role("button", name=f"Approve withdrawal {wd.id}").click()
        await expect(second.get_by_role("status")).to_contain_text("the withdrawal goes on")
        await expect(second.get_by_text("No withdrawal is waiting for approval.")).to_be_visible()
        # Every page: no serious or critical accessibility finding; on a phone nothing is
        # wider than the screen (tables scroll inside their own box).
        phone = await operator(browser, base, sessions, "root@example.com", viewport=PHONE)
        pages = ["/admin", "/admin/accounts?q=alice",
                 f"/admin/accounts/merchant/{people.alice_merchant}",
                 f"/admin/accounts/user/{people.alice}", "/admin/kyc",
                 f"/admin/kyc/{request.id}", "/admin/cases", "/admin/approvals",
                 "/admin/audit", "/admin/reports"]
        for path in pages:
            for p in (page, phone):
                await p.goto(f"{base}{path}")
                assert await serious_violations(p) == [], path
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], (path, width)
        await phone.goto(f"{base}/admin/audit")
        await phone.get_by_role("button", name="Verify the audit log now").click()
        await expect(phone.locator("#verify-result")).to_contain_text("OK")
        assert await serious_violations(phone) == []
        await shot(phone, "audit-phone")
        await phone.goto(f"{base}/admin/accounts/merchant/{people.alice_merchant}")
        await shot(phone, "account-phone")
    assert errors == []
    async with sessions() as s:
        assert await kyc.tier_of(s, "merchant", people.alice_merchant) == 1
        assert (await s.get(Withdrawal, wd.id)).status == WithdrawalStatus.PENDING
