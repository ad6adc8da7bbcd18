"""The admin console in a real browser (Debian's Chromium through Playwright, the app served
by uvicorn on 127.0.0.1): on a phone-sized screen the balances page fits and its chart
shows; on the rules page one admin proposes a rule-set draft in the textarea and a second
admin approves it with the page's button. No page error, no CSP violation, along the way.

Without ``/usr/bin/chromium`` the tests skip, or fail when ``SATVAULT_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from satvault.auth.sessions import WebSession, mark_mfa
from satvault.risk import service as risk
from satvault.risk.models import RiskRuleSet
from satvault.web.app import create_app
from tests.liveserver import chromium, require_browser, serve, sqlite_copy
from tests.web.pages.admin_helpers import second_admin
from tests.web.pages.conftest import PASSWORD, page_settings

pytestmark = pytest.mark.slow
TIMEOUT_MS = 15_000


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    require_browser()


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: the pages are the subject; the other admin tests cover both databases."""
    return sqlite_copy(tmp_path, sqlite_template)


async def sign_in(page: Any, base: str, sessions: Any, email: str) -> None:
    """Through the login form, then the second factor marked on the session."""
    await page.context.clear_cookies()
    await page.goto(f"{base}/login")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name=re.compile("Sign in", re.I)).click()
    await page.wait_for_load_state()
    async with sessions() as s, s.begin():
        session_id = (await s.execute(select(WebSession.id).where(
            WebSession.revoked_at.is_(None)).order_by(WebSession.created_at.desc()).limit(1))
        ).scalar_one()
        await mark_mfa(s, session_id=session_id)


async def test_balances_on_a_phone_and_a_rule_change_by_two_admins(engine, db_url, people,
                                                                  sessions):
    from playwright.async_api import expect

    await second_admin(sessions)
    async with sessions() as s, s.begin():
        before, _ = await risk.live_rule_set(s)
    app = create_app(page_settings(db_url), engine=engine, start_workers=False)
    async with serve(app, lifespan=True) as base, chromium() as browser:
        context = await browser.new_context(viewport={"width": 360, "height": 740},
                                            locale="en-US")
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: problems.append(f"{page.url}: {m.text}")
                if m.type == "error" else None)

        await sign_in(page, base, sessions, "root@example.com")
        await page.goto(f"{base}/admin/balances")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Balances")
        await expect(page.locator(".chart svg")).to_be_visible()
        await expect(page.get_by_role("link", name="Rules & policy")).to_be_visible()
        fits = await page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert fits, "the balances page is wider than a 360 px phone"

        await page.goto(f"{base}/admin/rules")
        editor = page.get_by_label("New draft (JSON)")
        doc = json.loads(await editor.input_value())
        doc["thresholds"]["review"] += 1
        await editor.fill(json.dumps(doc, indent=2))
        await page.get_by_label("What changes, and why").fill("one point more before review")
        await page.get_by_role("button", name="Propose this draft").click()
        await expect(page.locator("#notice")).to_contain_text("proposed as a draft")
        await expect(page.get_by_text("You proposed this draft")).to_be_visible()
        await expect(page.get_by_role("button", name=re.compile("^Approve draft"))).to_have_count(0)

        await sign_in(page, base, sessions, "ops@example.com")
        await page.goto(f"{base}/admin/rules")
        await page.get_by_role("button", name=re.compile("^Approve draft")).click()
        await expect(page.locator("#notice")).to_contain_text("is live")
        await context.close()
    assert problems == []
    async with sessions() as s, s.begin():
        version, _ = await risk.live_rule_set(s)
        row = await s.get(RiskRuleSet, version)
    assert version != before and row is not None and json.loads(row.rules)["thresholds"][
        "review"] == doc["thresholds"]["review"]
