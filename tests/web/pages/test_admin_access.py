"""Who may open the admin console: signed out → sign in; a merchant owner → 403 on every
page and every action; an admin whose second factor has not passed (no TOTP yet) → sent to enroll;
an admin with it → the pages. A form posted without its CSRF token is refused and changes
nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from satvault.accounts.models import AuditEvent, Wallet
from tests.web.pages.admin_support import (
    ADMIN_PAGES,
    merchant_wallet,
    page_csrf,
    sign_in_admin,
)
from tests.web.pages.conftest import csrf_of, sign_in

pytestmark = pytest.mark.asyncio

ACTIONS = ["/admin/wallets/{w}/freeze", "/admin/wallets/{w}/unfreeze",
           "/admin/kyc/kyq_x/decide", "/admin/cases/rc_x/close", "/admin/cases/rc_x/notes",
           "/admin/approvals/wd_x/approve", "/admin/approvals/wd_x/reject",
           "/admin/audit/verify"]


async def test_signed_out_goes_to_sign_in(browser, people):
    r = await browser.get("/admin/kyc")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/admin/kyc"


async def test_a_merchant_owner_gets_403_on_every_admin_page_and_action(browser, people,
                                                                         sessions):
    wallet = await merchant_wallet(sessions, people.alice_merchant)
    await sign_in(browser, "alice@example.com")
    token = csrf_of((await browser.get("/dashboard")).text)
    for path in [*ADMIN_PAGES, f"/admin/accounts/merchant/{people.alice_merchant}",
                 "/admin/reports/download?report=ctr&from=2026-01-01&to=2026-01-31"]:
        r = await browser.get(path)
        assert r.status_code == 403, path
        assert "text/html" in r.headers["content-type"]
    for path in ACTIONS:
        r = await browser.post(path.format(w=wallet.id),
                               data={"csrf_token": token, "reason": "x", "confirm": "yes"})
        assert r.status_code == 403, path
    async with sessions() as s:
        assert (await s.get(Wallet, wallet.id)).frozen_at is None


async def test_an_admin_without_the_second_factor_is_refused(browser, people, sessions):
    """No TOTP yet: every admin page sends the operator to enroll first (satvault.auth)."""
    await sign_in_admin(browser, sessions, mfa=False)
    for path in ADMIN_PAGES:
        r = await browser.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/account/totp/enroll"


async def test_an_admin_with_the_second_factor_sees_every_page(browser, people, sessions):
    await sign_in_admin(browser, sessions)
    for path in ADMIN_PAGES:
        r = await browser.get(path)
        assert r.status_code == 200, (path, r.text)
        assert 'aria-label="Admin sections"' in r.text  # the console's navigation
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
    home = await browser.get("/admin")
    for link in ("/admin/kyc", "/admin/cases", "/admin/approvals", "/admin/audit"):
        assert f'href="{link}"' in home.text


async def test_a_form_without_its_csrf_token_changes_nothing(browser, people, sessions):
    wallet = await merchant_wallet(sessions, people.alice_merchant)
    await sign_in_admin(browser, sessions)
    good = await page_csrf(browser)
    async with sessions() as s:
        before = await s.scalar(select(func.count()).select_from(AuditEvent))
    for data in ({}, {"csrf_token": ""}, {"csrf_token": good[:-2] + "xx"}):
        r = await browser.post(f"/admin/wallets/{wallet.id}/freeze",
                               data={**data, "reason": "court order", "confirm": "yes"})
        assert r.status_code == 403
        assert "did not come from this site" in r.text
    async with sessions() as s:
        assert (await s.get(Wallet, wallet.id)).frozen_at is None
        assert await s.scalar(select(func.count()).select_from(AuditEvent)) == before
