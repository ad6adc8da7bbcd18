"""The sign-in pages as a browser uses them (httpx keeping cookies, forms posted with their
CSRF tokens), with a real SMTP server: sign up, read the mail, confirm, sign in; reset;
TOTP enrollment and the TOTP step (no usable session before it), recovery codes; admins
sent to enroll; the security page; step-up; the session grant of the token endpoint."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.auth.sessions import WebSession
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit_one
from satvault.web.app import create_app
from satvault.web.pages.deps import SteppedUp
from tests.auth.conftest import Mailbox, settings_for
from tests.web.pages.conftest import csrf_of

PASSWORD = "correct horse battery"
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
_SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
_CODES = re.compile(r"<li><code>([0-9a-z]{5}-[0-9a-z]{5})</code></li>")
REGTEST_ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


class Browsers:
    """Browsers (cookie-keeping clients) on one app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.open: list[httpx.AsyncClient] = []

    def new(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                   base_url="http://sv.test")
        self.open.append(client)
        return client


@pytest.fixture
async def browsers(engine, db_url, smtp) -> AsyncIterator[Browsers]:
    app = create_app(settings_for(db_url, smtp[1], rate_limit_enabled=False), engine=engine,
                     start_workers=False)

    @app.post("/test/money")
    async def money(view: SteppedUp) -> dict[str, bool]:  # a money action, for the test
        return {"ok": bool(view.id)}

    async with app.router.lifespan_context(app):
        b = Browsers(app)
        try:
            yield b
        finally:
            for c in b.open:
                await c.aclose()


@pytest.fixture
async def browser(browsers: Browsers) -> httpx.AsyncClient:
    return browsers.new()


async def post_form(client: httpx.AsyncClient, page_path: str, action: str,
                    **fields: str) -> httpx.Response:
    page = await client.get(page_path)
    assert page.status_code == 200, page.text
    return await client.post(action, data={"csrf_token": csrf_of(page.text), **fields})


async def sign_in(client: httpx.AsyncClient, email: str,
                  password: str = PASSWORD) -> httpx.Response:
    # The signed-out CSRF token from a page that never redirects (/login does, when signed
    # in): the same double-submit cookie.
    return await post_form(client, "/password-reset", "/login", email=email,
                           password=password)


async def sign_up_and_verify(client: httpx.AsyncClient, mailbox: Mailbox,
                             email: str) -> None:
    r = await post_form(client, "/signup", "/signup", email=email, password=PASSWORD,
                        password_again=PASSWORD)
    assert r.status_code == 200 and "Check your mail" in r.text, r.text
    token = mailbox.last_link(email, "/verify")
    landing = await client.get(f"/verify?token={token}")
    assert landing.status_code == 200 and "Confirm my address" in landing.text
    r = await client.post("/verify", data={"csrf_token": csrf_of(landing.text),
                                           "token": token, "password": "not mine at all"})
    assert r.status_code == 422 and "not the password" in r.text, r.text  # the link stands
    r = await client.post("/verify", data={"csrf_token": csrf_of(r.text),
                                           "token": token, "password": PASSWORD})
    assert r.status_code == 200 and "is confirmed" in r.text, r.text


async def reset_by_mail(client: httpx.AsyncClient, mailbox: Mailbox, email: str,
                        password: str) -> httpx.Response:
    """Ask for a reset link on the page, then set ``password`` through it."""
    await post_form(client, "/password-reset", "/password-reset", email=email)
    token = mailbox.last_link(email, "/password-reset/confirm")
    page = await client.get(f"/password-reset/confirm?token={token}")
    return await client.post("/password-reset/confirm", data={
        "csrf_token": csrf_of(page.text), "token": token, "password": password,
        "password_again": password})


async def enroll_totp(client: httpx.AsyncClient, clock) -> tuple[pyotp.TOTP, list[str]]:
    page = await client.get("/account/totp/enroll")
    assert page.status_code == 200, page.text
    started = await client.post("/account/totp/enroll",
                                data={"csrf_token": csrf_of(page.text)})
    assert started.status_code == 200 and "<svg" in started.text
    secret = _SECRET.search(started.text).group(1)
    totp = pyotp.TOTP(secret)
    done = await client.post("/account/totp/confirm", data={
        "csrf_token": csrf_of(started.text), "code": totp.at(clock.now())})
    assert done.status_code == 200, done.text
    codes = _CODES.findall(done.text)
    assert len(codes) == 10
    clock.advance(seconds=30)  # the enrollment code's step is spent
    return totp, codes


async def test_sign_up_read_the_mail_confirm_and_sign_in(browser, mailbox):
    r = await sign_in(browser, "new@example.com")
    assert r.status_code == 401
    await sign_up_and_verify(browser, mailbox, "new@example.com")
    r = await sign_in(browser, "new@example.com")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    assert (await browser.get("/dashboard")).status_code == 200


async def test_an_unconfirmed_account_is_told_as_a_wrong_password_is(browser, mailbox):
    """Both are told the address may not be confirmed yet: told apart, a sign-up then a
    sign-in with the password just chosen said whether the address was free (found from
    outside)."""
    await post_form(browser, "/signup", "/signup", email="slow@example.com",
                    password=PASSWORD, password_again=PASSWORD)
    r = await sign_in(browser, "slow@example.com")
    assert r.status_code == 401 and "not confirmed yet" in r.text
    await sign_up_and_verify(browser, mailbox, "taken@example.com")
    wrong = await sign_in(browser, "taken@example.com", password="a wrong password")
    assert wrong.status_code == 401 and "not confirmed yet" in wrong.text


async def test_forms_without_their_csrf_token_are_refused(browser, mailbox, sessions):
    r = await browser.post("/signup", data={"email": "x@example.com", "password": PASSWORD,
                                            "password_again": PASSWORD})
    assert r.status_code == 403
    assert mailbox.to("x@example.com") == []
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="ann@example.com", password=PASSWORD)
    await sign_in(browser, "ann@example.com")
    r = await browser.post("/account/password", data={
        "current": PASSWORD, "password": "something else", "password_again": "something else"})
    assert r.status_code == 403
    r = await browser.post("/account/password", data={
        "csrf_token": "not-the-token", "current": PASSWORD, "password": "something else",
        "password_again": "something else"})
    assert r.status_code == 403
    # Nothing changed: the old password still signs in.
    assert (await sign_in(browser, "ann@example.com")).status_code == 303


async def test_reset_by_mail_signs_out_everywhere(browsers, mailbox, sessions):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="bea@example.com", password=PASSWORD)
    laptop, phone = browsers.new(), browsers.new()
    await sign_in(laptop, "bea@example.com")
    assert (await laptop.get("/dashboard")).status_code == 200
    r = await post_form(phone, "/password-reset", "/password-reset", email="bea@example.com")
    assert r.status_code == 200 and "a link to set a new password" in r.text
    unknown = await post_form(phone, "/password-reset", "/password-reset",
                              email="nobody@example.com")
    assert (unknown.text.replace("nobody@example.com", "X")
            == r.text.replace("bea@example.com", "X"))
    token = mailbox.last_link("bea@example.com", "/password-reset/confirm")
    page = await phone.get(f"/password-reset/confirm?token={token}")
    r = await phone.post("/password-reset/confirm", data={
        "csrf_token": csrf_of(page.text), "token": token, "password": "the new secret",
        "password_again": "the new secret"})
    assert r.status_code == 200 and "signed out everywhere" in r.text
    assert (await laptop.get("/dashboard")).status_code == 303
    assert (await sign_in(phone, "bea@example.com")).status_code == 401
    assert (await sign_in(phone, "bea@example.com", "the new secret")).status_code == 303


async def test_totp_enroll_then_sign_in_needs_the_code_and_no_session_before_it(
        browsers, mailbox, sessions, clock):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="cat@example.com", password=PASSWORD)
    browser = browsers.new()
    await sign_in(browser, "cat@example.com")
    totp, codes = await enroll_totp(browser, clock)
    await browser.post("/logout", data={"csrf_token": csrf_of(
        (await browser.get("/dashboard")).text)})

    fresh = browsers.new()
    async with sessions() as s:
        before = await s.scalar(select(func.count()).select_from(WebSession))
    r = await sign_in(fresh, "cat@example.com")
    assert r.status_code == 303 and r.headers["location"].startswith("/login/totp")
    assert "sv_session" not in fresh.cookies  # half signed in: no session at all
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(WebSession)) == before
    assert (await fresh.get("/dashboard")).status_code == 303
    step = await fresh.get("/login/totp")
    r = await fresh.post("/login/totp", data={"csrf_token": csrf_of(step.text),
                                              "code": "000000"})
    assert r.status_code == 401 and "not right" in r.text
    code = totp.at(clock.now())
    r = await fresh.post("/login/totp", data={"csrf_token": csrf_of(step.text), "code": code})
    assert r.status_code == 303 and "sv_session" in fresh.cookies
    assert (await fresh.get("/dashboard")).status_code == 200

    # The same code again, in another browser: refused (replay); a recovery code, once.
    other = browsers.new()
    await sign_in(other, "cat@example.com")
    step = await other.get("/login/totp")
    r = await other.post("/login/totp", data={"csrf_token": csrf_of(step.text), "code": code})
    assert r.status_code == 401
    r = await other.post("/login/totp", data={"csrf_token": csrf_of(step.text),
                                              "code": codes[3]})
    assert r.status_code == 303
    third = browsers.new()
    await sign_in(third, "cat@example.com")
    step = await third.get("/login/totp")
    r = await third.post("/login/totp", data={"csrf_token": csrf_of(step.text),
                                              "code": codes[3]})
    assert r.status_code == 401


async def test_an_admin_without_totp_is_sent_to_enroll_first(browser, sessions, clock):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="root@example.com", password=PASSWORD, is_admin=True)
    r = await sign_in(browser, "root@example.com")
    assert r.status_code == 303 and r.headers["location"] == "/account/totp/enroll"
    for path in ("/dashboard", "/account/security", "/account/step-up"):
        r = await browser.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/account/totp/enroll", path
    await enroll_totp(browser, clock)
    # Enrolling passed the second factor in this session: the admin goes on.
    assert (await browser.get("/account/security")).status_code == 200


async def test_the_session_grant_needs_the_second_factor_the_pages_need(browsers, sessions,
                                                                       clock):
    """Found from outside: the session grant checked neither that an admin (or a user an
    admin marked) had TOTP nor that the session had passed it: an admin signed in with the
    password alone, whom every page sends to enrollment, took an ``admin`` token with the CSRF
    token the enrollment page shows. It refuses now like the password grant: while TOTP must
    still be enrolled, and for an account with TOTP whose session did not pass it."""
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="root@example.com", password=PASSWORD, is_admin=True)
        await acc.create_user(s, email="mo@example.com", password=PASSWORD)

    async def grant(browser: httpx.AsyncClient, page: str) -> httpx.Response:
        csrf = csrf_of((await browser.get(page)).text)
        return await browser.post("/api/v1/auth/token", json={"grant_type": "session"},
                                  headers={"X-CSRF-Token": csrf})

    root = browsers.new()
    await sign_in(root, "root@example.com")
    r = await grant(root, "/account/totp/enroll")
    assert r.status_code == 401 and "enroll TOTP" in r.json()["detail"], r.text
    await enroll_totp(root, clock)
    r = await grant(root, "/account/security")
    assert r.status_code == 200 and "admin" in r.json()["scope"].split(), r.text
    # A session that signed in before TOTP was turned on (in another browser) never passed it.
    # (Its pages end it at its next request now; the grant, asked first, refuses it too.)
    before, enrolling = browsers.new(), browsers.new()
    await sign_in(before, "mo@example.com")
    stale = csrf_of((await before.get("/account/security")).text)
    await sign_in(enrolling, "mo@example.com")
    await enroll_totp(enrolling, clock)
    r = await before.post("/api/v1/auth/token", json={"grant_type": "session"},
                          headers={"X-CSRF-Token": stale})
    assert r.status_code == 401 and "second factor" in r.json()["detail"], r.text
    assert (await grant(enrolling, "/account/security")).status_code == 200


async def test_a_merchant_an_admin_marked_must_enroll(browser, sessions):
    from satvault.auth import totp

    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="mo@example.com", password=PASSWORD)
        merchant = await acc.create_merchant(s, name="Mo's", owner_user_id=user.id)
        await totp.set_required(s, owner_id=merchant.id, required=True, actor="test")
    r = await sign_in(browser, "mo@example.com")
    assert r.headers["location"] == "/account/totp/enroll"
    assert (await browser.get("/dashboard")).headers["location"] == "/account/totp/enroll"


async def test_new_session_id_on_sign_in_and_the_old_one_revoked(browser, sessions):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="dan@example.com", password=PASSWORD)
    await sign_in(browser, "dan@example.com")
    first = browser.cookies["sv_session"]
    await sign_in(browser, "dan@example.com")
    second = browser.cookies["sv_session"]
    assert first != second
    async with sessions() as s:
        rows = list((await s.execute(select(WebSession).order_by(WebSession.created_at)))
                    .scalars())
    assert len(rows) == 2 and rows[0].revoked_at is not None and rows[1].revoked_at is None


async def test_security_page_lists_sessions_and_signs_out_everywhere(browsers, sessions):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="eve@example.com", password=PASSWORD)
    laptop, phone = browsers.new(), browsers.new()
    await sign_in(laptop, "eve@example.com")
    await sign_in(phone, "eve@example.com")
    page = await laptop.get("/account/security")
    assert page.status_code == 200
    assert page.text.count("/revoke\"") == 2 and "this one" in page.text
    r = await laptop.post("/account/sessions/revoke-all",
                          data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303
    assert (await phone.get("/dashboard")).status_code == 303
    assert (await laptop.get("/dashboard")).status_code == 200
    # Change the password: a wrong current one is refused (and counted).
    page = await laptop.get("/account/security")
    r = await laptop.post("/account/password", data={
        "csrf_token": csrf_of(page.text), "current": "not it at all",
        "password": "a new password", "password_again": "a new password"})
    assert r.status_code == 422
    r = await laptop.post("/account/password", data={
        "csrf_token": csrf_of(page.text), "current": PASSWORD,
        "password": "a new password", "password_again": "a new password"})
    assert r.status_code == 200 and "Password changed" in r.text
    assert (await sign_in(phone, "eve@example.com", "a new password")).status_code == 303


async def test_step_up_required_then_satisfied_by_payment_password_or_totp(
        browser, sessions, clock):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="fay@example.com", password=PASSWORD)
    await sign_in(browser, "fay@example.com")
    token = _META.search((await browser.get("/dashboard")).text).group(1)
    r = await browser.post("/test/money", headers={"X-CSRF-Token": token})
    assert r.status_code == 303
    assert r.headers["location"] == "/account/step-up?next=/test/money"
    page = await browser.get("/account/security")
    r = await browser.post("/account/payment-password", data={
        "csrf_token": csrf_of(page.text), "current": PASSWORD,
        "payment_password": PASSWORD, "payment_password_again": PASSWORD})
    assert r.status_code == 422 and "differ from the sign-in password" in r.text
    r = await browser.post("/account/payment-password", data={
        "csrf_token": csrf_of(page.text), "current": PASSWORD,
        "payment_password": "pay me carefully", "payment_password_again": "pay me carefully"})
    assert r.status_code == 200 and "Payment password set" in r.text
    step = await browser.get("/account/step-up?next=/dashboard")
    r = await browser.post("/account/step-up", data={
        "csrf_token": csrf_of(step.text), "payment_password": "wrong one!", "next": "/x"})
    assert r.status_code == 401
    r = await browser.post("/account/step-up", data={
        "csrf_token": csrf_of(step.text), "payment_password": "pay me carefully",
        "next": "/dashboard"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    r = await browser.post("/test/money", headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json() == {"ok": True}
    clock.advance(minutes=6)
    r = await browser.post("/test/money", headers={"X-CSRF-Token": token})
    assert r.status_code == 303
    # TOTP works as well.
    totp, _ = await enroll_totp(browser, clock)
    step = await browser.get("/account/step-up")
    r = await browser.post("/account/step-up", data={
        "csrf_token": csrf_of(step.text), "code": totp.at(clock.now()), "next": "/dashboard"})
    assert r.status_code == 303
    assert (await browser.post("/test/money", headers={"X-CSRF-Token": token})
            ).status_code == 200


async def test_session_grant_needs_the_csrf_token_and_dies_with_the_session(browser, sessions):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="gus@example.com", password=PASSWORD)
    await sign_in(browser, "gus@example.com")
    token = _META.search((await browser.get("/dashboard")).text).group(1)
    r = await browser.post("/api/v1/auth/token", json={"grant_type": "session"})
    assert r.status_code == 401
    r = await browser.post("/api/v1/auth/token", json={"grant_type": "session"},
                           headers={"X-CSRF-Token": token})
    assert r.status_code == 200, r.text
    access = r.json()["access_token"]
    api = {"Authorization": f"Bearer {access}"}
    assert (await browser.get("/api/v1/me", headers=api)).status_code == 200
    await browser.post("/logout", data={"csrf_token": token})
    r = await browser.get("/api/v1/me", headers=api)
    assert r.status_code == 401 and "session" in r.json()["detail"]


async def test_the_session_grant_gives_money_scopes_only_within_a_step_up(browser, sessions,
                                                                         clock):
    """Found from outside: the session grant issued every scope the user may hold,
    ``withdrawals:write`` included, to any live session, so the cookie (and the CSRF token any
    page shows) minted a token that withdrew through the API without the step-up the
    dashboard's withdrawal form demands. Money scopes now come only to a session that
    re-proved a factor within the step-up window; asked for without one, the grant says so."""
    async with sessions() as s, s.begin():
        equity = (await ensure_platform_accounts(s, "BTC")).equity.id
        alice = await acc.create_user(s, email="alice@example.com", password=PASSWORD)
        shop = await acc.create_merchant(s, name="Alice's", owner_user_id=alice.id)
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=shop.id)
    await submit_one(sessions, TransferSpec(f"fund:{wallet.id}", equity,
                                            wallet.ledger_account_id, 5_000_000_000, "BTC"))
    await sign_in(browser, "alice@example.com")
    r = await post_form(browser, "/account/security", "/account/payment-password",
                        current=PASSWORD, payment_password="pay me carefully",
                        payment_password_again="pay me carefully")
    assert r.status_code == 200 and "Payment password set." in r.text, r.text
    csrf = {"X-CSRF-Token": _META.search((await browser.get("/dashboard")).text).group(1)}

    async def grant(**extra: Any) -> httpx.Response:
        return await browser.post("/api/v1/auth/token", headers=csrf, json={
            "grant_type": "session", "merchant_id": shop.id, **extra})

    async def withdraw(access: str, key: str) -> httpx.Response:
        return await browser.post(
            f"/api/v1/wallets/{wallet.id}/withdrawals",
            headers={"Authorization": f"Bearer {access}", "Idempotency-Key": key},
            json={"destination": REGTEST_ADDRESS, "amount_msat": 100_000_000})

    plain = await grant()
    assert plain.status_code == 200, plain.text
    assert "withdrawals:write" not in plain.json()["scope"].split()
    assert "wallet:read" in plain.json()["scope"].split()
    assert (await withdraw(plain.json()["access_token"], "w1")).status_code == 403
    asked = await grant(scopes=["withdrawals:write"])
    assert asked.status_code == 403 and asked.json()["type"].endswith("/step-up-required")
    # The step-up a real client makes (the dashboard's page), then the grant again.
    r = await post_form(browser, "/account/step-up", "/account/step-up",
                        payment_password="pay me carefully", next="/dashboard")
    assert r.status_code == 303, r.text
    money = await grant()
    assert "withdrawals:write" in money.json()["scope"].split(), money.text
    assert (await withdraw(money.json()["access_token"], "w2")).status_code == 201
    # Past the window the session is back to a session alone.
    clock.advance(minutes=6)
    assert "withdrawals:write" not in (await grant()).json()["scope"].split()


async def test_lockout_through_the_login_form(browser, sessions, clock):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="hal@example.com", password=PASSWORD)
    for _ in range(5):
        assert (await sign_in(browser, "hal@example.com", "bad password")).status_code == 401
    r = await sign_in(browser, "hal@example.com")
    assert r.status_code == 401 and "Too many failed attempts" in r.text
    clock.advance(seconds=61)
    assert (await sign_in(browser, "hal@example.com")).status_code == 303


async def test_totp_off_needs_a_code_and_is_audited(browser, sessions, clock):
    from satvault.audit.models import AuditEvent
    from satvault.auth.models import Credentials, RecoveryCode

    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="ida@example.com", password=PASSWORD)
    await sign_in(browser, "ida@example.com")
    totp, _ = await enroll_totp(browser, clock)
    page = await browser.get("/account/security")
    assert "Two-factor sign-in is on." in page.text
    r = await browser.post("/account/totp/disable", data={"csrf_token": csrf_of(page.text),
                                                         "code": "123456"})
    assert r.status_code == 422 and "not right" in r.text
    r = await browser.post("/account/totp/disable", data={"csrf_token": csrf_of(page.text),
                                                         "code": totp.at(clock.now())})
    assert r.status_code == 200 and "Two-factor sign-in is off." in r.text
    async with sessions() as s:
        creds = await s.get(Credentials, user.id)
        assert creds.totp_secret is None and creds.totp_confirmed_at is None
        assert await s.scalar(select(func.count()).select_from(RecoveryCode)) == 0
        actions = set((await s.execute(select(AuditEvent.action))).scalars())
    assert {"auth.totp_enabled", "auth.totp_disabled", "auth.signin",
            "auth.signin_failed"} <= actions
    # Off: the password alone signs in again.
    assert (await sign_in(browser, "ida@example.com")).status_code == 303


async def test_totp_an_admin_requires_stays_on_from_the_security_page(browsers, sessions,
                                                                      clock):
    """Found from outside: the security page's form turned TOTP off for a user an
    administrator required it of (the API refused: 403), and for an admin, so the session
    kept its second-factor mark for a factor that was gone. The rule is in ``totp.disable``
    now, which the page and the API share; turning TOTP off (where allowed) clears the mark
    on every session of the user."""
    from satvault.auth import totp as totp_service
    from satvault.auth.models import Credentials

    async with sessions() as s, s.begin():
        lou = await acc.create_user(s, email="lou@example.com", password=PASSWORD)
        root = await acc.create_user(s, email="root@example.com", password=PASSWORD,
                                     is_admin=True)
        await totp_service.set_required(s, owner_id=lou.id, required=True, actor="test")

    async def turn_off(browser: httpx.AsyncClient, code: str) -> httpx.Response:
        return await post_form(browser, "/account/security", "/account/totp/disable",
                               code=code)

    async def enabled(user_id: str) -> bool:
        async with sessions() as s:
            return totp_service.totp_enabled(await s.get(Credentials, user_id))

    signed_in, codes = {}, {}
    for user in (lou, root):
        signed_in[user.id] = browser = browsers.new()
        await sign_in(browser, user.email)
        codes[user.id], _ = await enroll_totp(browser, clock)
        r = await turn_off(browser, codes[user.id].at(clock.now()))
        assert r.status_code == 403 and "TOTP" in r.text, r.text
        assert await enabled(user.id), user.email
    # No longer required: it turns off, and no session of the user claims the factor now.
    async with sessions() as s, s.begin():
        await totp_service.set_required(s, owner_id=lou.id, required=False, actor="test")
    clock.advance(seconds=30)
    r = await turn_off(signed_in[lou.id], codes[lou.id].at(clock.now()))
    assert r.status_code == 200 and "Two-factor sign-in is off." in r.text, r.text
    async with sessions() as s:
        marks = (await s.execute(select(WebSession.mfa_at).where(
            WebSession.user_id == lou.id))).scalars().all()
    assert marks and all(mark is None for mark in marks)


async def test_a_password_change_spends_the_reset_links_mailed_before_it(browsers, mailbox,
                                                                        sessions):
    """Found from outside: a reset link mailed before a password change on the security
    page still set a new password after it (only the reset itself spent the links)."""
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="rae@example.com", password=PASSWORD)
    laptop, thief = browsers.new(), browsers.new()
    await post_form(thief, "/password-reset", "/password-reset", email="rae@example.com")
    token = mailbox.last_link("rae@example.com", "/password-reset/confirm")
    await sign_in(laptop, "rae@example.com")
    r = await post_form(laptop, "/account/security", "/account/password", current=PASSWORD,
                        password="a new password", password_again="a new password")
    assert r.status_code == 200 and "Password changed" in r.text, r.text
    page = await thief.get(f"/password-reset/confirm?token={token}")
    r = await thief.post("/password-reset/confirm", data={
        "csrf_token": csrf_of(page.text), "token": token, "password": "the thief's one",
        "password_again": "the thief's one"})
    assert r.status_code == 422 and "not valid" in r.text
    assert (await sign_in(thief, "rae@example.com", "the thief's one")).status_code == 401
    assert (await sign_in(thief, "rae@example.com", "a new password")).status_code == 303


async def test_the_reset_page_refuses_the_payment_password_as_the_change_does(
        browsers, mailbox, sessions):
    """Found from outside: the reset page set a sign-in password equal to the payment
    password, which the security page's change refuses."""
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="pia@example.com", password=PASSWORD)
    browser = browsers.new()
    await sign_in(browser, "pia@example.com")
    r = await post_form(browser, "/account/security", "/account/payment-password",
                        current=PASSWORD, payment_password="pay me carefully",
                        payment_password_again="pay me carefully")
    assert r.status_code == 200 and "Payment password set." in r.text, r.text
    changed = await post_form(browser, "/account/security", "/account/password",
                              current=PASSWORD, password="pay me carefully",
                              password_again="pay me carefully")
    assert changed.status_code == 422
    assert "must differ from the payment password" in changed.text
    r = await reset_by_mail(browsers.new(), mailbox, "pia@example.com", "pay me carefully")
    assert r.status_code == 422 and "must differ from the payment password" in r.text
    assert (await sign_in(browsers.new(), "pia@example.com", "pay me carefully")
            ).status_code == 401


@pytest.mark.parametrize("required", [True, False])
async def test_a_session_without_the_second_factor_ends_when_totp_is_turned_on_elsewhere(
        browsers, sessions, clock, required):
    """Found from outside: a session signed in with the password alone (a stolen one, say)
    was held at enrollment while TOTP was required, then got the whole dashboard the moment
    the owner turned TOTP on from another session; it could change the password and sign
    the owner out. A session that never passed the second factor the account now has is
    ended at its next request; the owner's own session goes on."""
    from satvault.auth import totp

    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="dave@example.com", password=PASSWORD)
        if required:
            merchant = await acc.create_merchant(s, name="Dave's", owner_user_id=user.id)
            await totp.set_required(s, owner_id=merchant.id, required=True, actor="test")
    thief, owner = browsers.new(), browsers.new()
    assert (await sign_in(thief, "dave@example.com")).status_code == 303
    assert (await sign_in(owner, "dave@example.com")).status_code == 303
    if not required:
        assert (await owner.get("/account/security")).status_code == 200
        assert (await thief.get("/dashboard")).status_code == 200
    await enroll_totp(owner, clock)
    for path in ("/dashboard", "/account/security"):
        r = await thief.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), (
            path, r.status_code, r.headers.get("location"))
    r = await thief.post("/account/password", data={
        "csrf_token": "x", "current": PASSWORD, "password": "attacker pw 123",
        "password_again": "attacker pw 123"})
    assert r.status_code in (303, 403)
    assert (await owner.get("/account/security")).status_code == 200  # the owner goes on
    async with sessions() as s:
        ended = (await s.execute(select(WebSession).where(
            WebSession.user_id == user.id, WebSession.mfa_at.is_(None),
            WebSession.revoked_at.is_(None)))).scalars().all()
    assert ended == []
    assert (await sign_in(thief, "dave@example.com", "attacker pw 123")).status_code != 303


async def test_a_sign_in_waiting_for_its_code_ends_with_a_password_reset(
        browsers, mailbox, sessions, clock):
    """Found from outside: someone with the old password, half signed in (the challenge
    cookie), finished with a code after the owner had reset the password."""
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="dan@example.com", password=PASSWORD)
    owner = browsers.new()
    await sign_in(owner, "dan@example.com")
    totp, _codes = await enroll_totp(owner, clock)
    thief = browsers.new()
    r = await sign_in(thief, "dan@example.com")  # the old password
    assert r.headers["location"].startswith("/login/totp")
    step = await thief.get("/login/totp")
    r = await reset_by_mail(owner, mailbox, "dan@example.com", "the new secret")
    assert r.status_code == 200, r.text
    clock.advance(seconds=30)
    r = await thief.post("/login/totp", data={"csrf_token": csrf_of(step.text),
                                              "code": totp.at(clock.now())})
    assert r.status_code == 401 and "sv_session" not in thief.cookies, r.text
    assert (await thief.get("/dashboard")).status_code == 303
