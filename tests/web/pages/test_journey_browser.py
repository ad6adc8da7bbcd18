"""One journey through the pages in a real browser (issue 14 §5): Debian's Chromium driven by
Playwright, the app served by uvicorn over simnet and the Lightning simulator, a real SMTP
server (aiosmtpd) the sign-up mail is read from, and TOTP codes computed with ``pyotp`` from
the secret the enrollment page shows.

1. A merchant signs up, follows the mailed link, enrolls TOTP, signs out and back in with
   password and code, and opens a merchant account from the dashboard.
2. Creates a store, an API key (after a step-up with the code), and an invoice; the invoice
   is paid over Lightning and the overview's balance changes on the open page (no reload).
3. Later (the step-up has lapsed) asks for a withdrawal, steps up again; the live risk rules
   hold it for review.
4. An operator, made with a password, signs in, is made to enroll TOTP first, approves the
   merchant's KYC upgrade, steps up and releases the held withdrawal (closes its risk case
   as a false positive), and verifies the audit log.
5. All along: no request leaves the origin, no console error or CSP violation, and a
   screenshot of every step in ``test-artifacts/journey/NN-<step>.png``.

The authenticator's 30-second steps are the test's :class:`FakeClock` moved forward (a code
is good once: each new code is from a later step), never a sleep. The workers do not run:
the test moves payments onto invoices itself (``settle_all``), as the other browser tests.
Without ``/usr/bin/chromium`` the test skips, or fails when ``SATVAULT_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.accounts.models import Merchant, User
from satvault.auth.sessions import STEP_UP_WINDOW
from satvault.kernel.clock import FakeClock, utcnow
from satvault.kyc import service as kyc
from satvault.kyc.requests import request_upgrade
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.risk.models import RiskCase
from tests.chainenv import LnEnv
from tests.checkout.conftest import make_app, settle_all
from tests.liveserver import chromium, free_port, require_browser, serve, sqlite_copy
from tests.mailbox import Mailbox
from tests.risk.conftest import default_doc
from tests.web.pages.admin_support import DEST, live_rules
from tests.web.pages.conftest import PASSWORD

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "journey"
TIMEOUT_MS = 15_000
MERCHANT = "mia@example.com"
OPERATOR = "olga@example.com"


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    require_browser()


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: the pages are the subject; their own tests cover both databases."""
    return sqlite_copy(tmp_path, sqlite_template)


@pytest.fixture
def web_port() -> int:
    return free_port()


@pytest.fixture
def settings_overrides(smtp: tuple[Mailbox, int], web_port: int
                       ) -> dict[str, object]:
    """The mail goes to the test's SMTP server; links in it point at the served app."""
    return {"rate_limit_enabled": False, "smtp_host": "127.0.0.1", "smtp_port": smtp[1],
            "mail_from": "satvault@example.com",
            "public_url": f"http://127.0.0.1:{web_port}"}


@dataclass
class Authenticator:
    """The phone app: the code of the current 30-second step, one step later each time it
    is read (the test's clock moves on, as a person waits for the next code)."""

    secret: str
    clock: FakeClock

    def code(self) -> str:
        self.clock.advance(seconds=30)
        return pyotp.TOTP(self.secret).at(utcnow())


@dataclass
class Watch:
    """What every page of the journey did that it must not: leave the origin, log an
    error, break the CSP."""

    base: str
    offsite: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    shots: int = 0

    def page(self, page: Any) -> Any:
        page.on("request", lambda r: None if r.url.startswith(self.base + "/")
                else self.offsite.append(r.url))
        page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        return page

    async def shot(self, page: Any, step: str) -> None:
        self.shots += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"{self.shots:02d}-{step}.png"),
                              full_page=True)


async def new_page(browser: Any, watch: Watch) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                        locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    return watch.page(await context.new_page())


async def enroll_totp(page: Any, watch: Watch, clock: FakeClock, who: str) -> Authenticator:
    """On the enrollment page: start, read the key beside the QR, confirm with a code."""
    from playwright.async_api import expect

    await page.get_by_role("button", name="Set up two-factor sign-in").click()
    secret = (await page.locator("#totp-secret").inner_text()).strip()
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
    await expect(page.locator("figure.qr svg")).to_be_visible()
    await watch.shot(page, f"{who}-totp-qr")
    phone = Authenticator(secret, clock)
    await page.get_by_label("Code").fill(phone.code())
    await page.get_by_role("button", name="Turn on").click()
    await expect(page.get_by_role("heading", name="Recovery codes")).to_be_visible()
    await expect(page.get_by_role("list", name="Recovery codes").locator("li")).to_have_count(10)
    await watch.shot(page, f"{who}-recovery-codes")
    return phone


async def sign_in(page: Any, base: str, email: str, phone: Authenticator | None) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    if phone is not None:
        await page.wait_for_url(f"{base}/login/totp**")
        await page.get_by_label("Code from your authenticator app").fill(phone.code())
        await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: "/login" not in url)


async def step_up(page: Any, phone: Authenticator, back: str) -> None:
    """Sent to the step-up page by a money action: the code, then back to the form."""
    from playwright.async_api import expect

    await page.wait_for_url(lambda url: "/account/step-up" in url)
    await expect(page.get_by_role("heading", name="Confirm it is you")).to_be_visible()
    await page.get_by_label("Code from your authenticator app").fill(phone.code())
    await page.get_by_role("button", name="Confirm").first.click()
    await page.wait_for_url(back)


async def test_sign_up_to_paid_invoice_to_held_withdrawal_to_operator_review(
        lnenv: LnEnv, smtp: tuple[Mailbox, int], web_port: int,
        clock: FakeClock) -> None:
    from playwright.async_api import expect

    mailbox = smtp[0]
    # The platform's rules: an outgoing 50,000 sats or more is held for review.
    rules = default_doc()
    rules["rules"].append({"id": "big", "score": 60, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "out"},
        {"field": "amount_msat", "op": "gte", "value": 50_000_000}]}})
    await live_rules(lnenv.sessions, rules)
    async with lnenv.sessions() as s, s.begin():
        await acc.create_user(s, email=OPERATOR, password=PASSWORD, is_admin=True)

    app = make_app(lnenv)
    async with app.router.lifespan_context(app), serve(app, port=web_port) as base, \
            chromium() as browser:
        watch = Watch(base)
        page = await new_page(browser, watch)

        # 1. Sign up, the mailed link, TOTP, sign out, sign in with the code.
        await page.goto(f"{base}/login")
        await page.get_by_role("link", name="Create an account").click()
        await page.get_by_label("E-mail").fill(MERCHANT)
        await page.get_by_label("Password", exact=True).fill(PASSWORD)
        await page.get_by_label("Password again").fill(PASSWORD)
        await watch.shot(page, "signup")
        await page.get_by_role("button", name="Create account").click()
        await expect(page.get_by_text(MERCHANT)).to_be_visible()
        await watch.shot(page, "check-mail")
        [mail] = mailbox.to(MERCHANT)
        body = mail.get_payload(decode=True).decode()
        link = re.search(r"http://\S+/verify\?token=[A-Za-z0-9_-]+", body)
        assert link is not None, body
        assert link.group(0).startswith(f"{base}/verify?token=")
        await page.goto(link.group(0))
        await page.get_by_label("The password you chose when you signed up").fill(PASSWORD)
        await page.get_by_role("button", name="Confirm my address").click()
        await expect(page.get_by_role("status")).to_contain_text("Your e-mail address is "
                                                                  "confirmed")
        await watch.shot(page, "verified")
        await page.get_by_role("link", name="Sign in").last.click()
        await sign_in(page, base, MERCHANT, None)
        await expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
        await page.get_by_role("link", name="Security").click()
        await page.get_by_role("link", name="Set up two-factor sign-in").click()
        phone = await enroll_totp(page, watch, clock, "merchant")
        await page.get_by_role("link", name="Continue").click()
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(lambda url: "/login" in url or url.rstrip("/") == base)
        await sign_in(page, base, MERCHANT, phone)
        await expect(page.get_by_text("You have no merchant account yet.")).to_be_visible()
        await watch.shot(page, "signed-in-with-totp")

        # A merchant account, then a store, an API key (step-up first) and an invoice.
        await page.get_by_label("Business name").fill("Mia's Mochi")
        await page.get_by_role("button", name="Create merchant account").click()
        await expect(page.get_by_role("heading", name="Mia's Mochi", level=1)).to_be_visible()
        mid = page.url.rstrip("/").rsplit("/", 1)[-1]
        assert mid.startswith("mer_"), page.url
        await page.goto(f"{base}/dashboard/m/{mid}/stores")
        await page.get_by_label("Name").fill("Mochi Stall")
        await page.get_by_label("Default invoice currency").fill("SATS")
        await page.get_by_role("button", name="Create store").click()
        await page.wait_for_url(re.compile(r"/stores/sto_[^/?]+\?saved=1$"))
        await watch.shot(page, "store")

        keys = f"{base}/dashboard/m/{mid}/keys"
        await page.goto(keys)

        async def ask_for_key() -> None:
            await page.get_by_label("Label").fill("shop server")
            await page.get_by_label("Belongs to").select_option(label="Store Mochi Stall")
            for scope in ("invoices:read", "invoices:write"):
                await page.get_by_label(scope, exact=True).check()
            await page.get_by_role("button", name="Create key").click()

        await ask_for_key()
        await step_up(page, phone, keys)
        await ask_for_key()
        secret = page.locator("[data-secret]")
        await expect(secret).to_have_text(re.compile(r"^\S{20,}$"))
        await watch.shot(page, "api-key")
        store_id = (await page.get_by_role("option", name="Store Mochi Stall")
                    .get_attribute("value"))
        api_key = {"Authorization": f"Bearer {(await secret.inner_text()).strip()}"}

        await page.goto(f"{base}/dashboard/m/{mid}/invoices")
        await page.get_by_label("Amount", exact=True).fill("100000")
        await page.get_by_label("Description (shown to the payer)").fill("Twelve mochi")
        await page.get_by_label("Lightning", exact=True).check()
        await page.get_by_role("button", name="Create invoice").click()
        await page.wait_for_url(re.compile(r"/invoices/inv_[^/?]+$"))
        bolt11 = (await page.locator("code.wrap", has_text="lnbcrt").inner_text()).strip()
        assert bolt11.startswith("lnbcrt"), bolt11
        await watch.shot(page, "invoice")
        async with httpx.AsyncClient(base_url=base) as api:  # the shop's server, with the key
            listed = await api.get(f"/api/v1/stores/{store_id}/invoices", headers=api_key)
        assert listed.status_code == 200, listed.text
        assert [i["id"] for i in listed.json()["items"]] == [page.url.rsplit("/", 1)[-1]]

        # 2. Paid over Lightning: the open overview's balance changes without a reload.
        async with page.expect_response(lambda r: r.url.endswith(
                f"/dashboard/m/{mid}/events") and r.status == 200):  # the stream is open
            await page.goto(f"{base}/dashboard/m/{mid}")
        available = page.locator('[data-balance="available"]')
        await expect(available).to_have_text("0 sats")
        await page.evaluate("window.__sameDocument = true")
        lnenv.network.pay("customer1", bolt11)
        await settle_all(lnenv)
        await expect(available).not_to_have_text("0 sats")
        assert await page.evaluate("window.__sameDocument === true"), "the page reloaded"
        await watch.shot(page, "balance-live")

        # 3. Later (the step-up has lapsed): a withdrawal, a step-up, held for review.
        clock.advance(STEP_UP_WINDOW.total_seconds() + 1)
        withdraw = f"{base}/dashboard/m/{mid}/withdraw"
        await page.goto(withdraw)

        async def ask_to_withdraw() -> None:
            onchain = page.get_by_role("region", name="On-chain")
            await onchain.get_by_label("Bitcoin address").fill(DEST)
            await onchain.get_by_label("Amount in sats").fill("60000")
            await onchain.get_by_role("button", name="Send").click()

        await ask_to_withdraw()
        await step_up(page, phone, withdraw)
        await ask_to_withdraw()
        await page.wait_for_url(re.compile(r"/withdrawals/[^/?]+$"))
        await expect(page.locator("[data-status]")).to_have_text("Held for review")
        await watch.shot(page, "withdrawal-held")
        wd_id = page.url.rsplit("/", 1)[-1]

        async with lnenv.sessions() as s, s.begin():
            user = (await s.execute(select(User).where(User.email == MERCHANT))).scalar_one()
            assert (await s.get(Merchant, mid)).owner_user_id == user.id  # type: ignore[union-attr]
            kyc_request = await request_upgrade(
                s, owner_type="merchant", owner_id=mid, tier=1, full_name="Mia's Mochi Ltd",
                documents=["docstore://registry/mochi"], requested_by=user.id, max_tier=3)
            case_id = (await s.execute(select(RiskCase.id))).scalar_one()

        # 4. The operator: TOTP enrolled on first sign-in (the app insists), then the review.
        desk = await new_page(browser, watch)
        await sign_in(desk, base, OPERATOR, None)
        await expect(desk.get_by_role("status")).to_contain_text(
            "Your account needs two-factor sign-in")
        ops_phone = await enroll_totp(desk, watch, clock, "operator")
        await desk.get_by_role("link", name="Continue").click()
        await desk.wait_for_url(f"{base}/admin")
        await expect(desk.locator("#kyc-count")).to_have_text("1")
        await watch.shot(desk, "admin-home")
        assert ops_phone.secret != phone.secret

        await desk.get_by_role("link", name="KYC queue").first.click()
        await desk.get_by_role("link", name=f"Review request {kyc_request.id}").click()
        await desk.get_by_label("business-registration").check()
        await desk.get_by_label("Note").fill("registry extract checked")
        await desk.get_by_role("button", name="Approve tier 1").click()
        await expect(desk.get_by_role("status")).to_contain_text("Approved")
        await watch.shot(desk, "kyc-approved")

        await desk.goto(f"{base}/admin/cases")
        await desk.get_by_role("link", name=case_id).click()
        await desk.get_by_role("button", name="Investigate").click()
        await desk.get_by_label("False positive").check()
        await desk.get_by_label("Held money").select_option("release")
        await desk.get_by_label("Note", exact=True).last.fill("a known customer's payout")
        await watch.shot(desk, "case")
        await desk.get_by_role("button", name="Close the case").click()
        # Closing decides the held money: the code again, then the decision again.
        await step_up(desk, ops_phone, f"{base}/admin/cases/{case_id}")
        await desk.get_by_label("False positive").check()
        await desk.get_by_label("Held money").select_option("release")
        await desk.get_by_label("Note", exact=True).last.fill("a known customer's payout")
        await desk.get_by_role("button", name="Close the case").click()
        await expect(desk.get_by_role("status")).to_contain_text("Done: closed")
        await watch.shot(desk, "case-closed")

        await desk.goto(f"{base}/admin/audit")
        await desk.get_by_role("button", name="Verify the audit log now").click()
        await expect(desk.locator("#verify-result")).to_contain_text("OK")
        await watch.shot(desk, "audit-verified")

        await page.goto(f"{base}/dashboard/m/{mid}/withdrawals/{wd_id}")
        await expect(page.locator("[data-status]")).to_have_text("Pending")
        await watch.shot(page, "withdrawal-released")

    # 5. Nothing left the origin; no error, no CSP violation on any page.
    assert watch.offsite == [], watch.offsite
    assert watch.errors == [], "\n".join(watch.errors)
    async with lnenv.sessions() as s:
        assert await kyc.tier_of(s, "merchant", mid) == 1
        assert (await s.get(Withdrawal, wd_id)).status == WithdrawalStatus.PENDING  # type: ignore[union-attr]
