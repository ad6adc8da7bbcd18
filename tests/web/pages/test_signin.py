"""Signing in and out through the pages: the session cookie's flags, CSRF on every form,
session fixation, revoked and expired sessions, open redirects, and one merchant's pages
never showing another's."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from satvault.auth.sessions import ABSOLUTE_LIFETIME, IDLE_TIMEOUT, WebSession
from satvault.web.app import create_app
from tests.web.pages.conftest import PASSWORD, csrf_of, page_settings, sign_in

pytestmark = pytest.mark.asyncio


async def test_a_page_without_a_session_goes_to_sign_in_and_back(browser, people):
    r = await browser.get("/dashboard?tab=x")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/dashboard%3Ftab%3Dx"
    r = await sign_in(browser, "alice@example.com", next_path="/dashboard?tab=x")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard?tab=x"
    page = await browser.get("/dashboard")
    assert page.status_code == 200
    assert "Alice&#39;s Shop" in page.text and "Bob" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["x-frame-options"] == "DENY"


async def test_the_session_cookie_is_http_only_and_same_site(browser, people):
    r = await sign_in(browser, "alice@example.com")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("sv_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # development, plain http


async def test_in_production_the_cookie_is_secure_and_host_bound(engine, db_url, people):
    app = create_app(page_settings(db_url, environment="production",
                                   secret_key="x" * 32), engine=engine, start_workers=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://test") as c:
        r = await sign_in(c, "alice@example.com")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-sv_session=") and "Secure" in cookie
    assert "Domain" not in cookie


async def test_a_wrong_password_signs_nobody_in(browser, people, sessions):
    r = await sign_in(browser, "alice@example.com", password="wrong password!")
    assert r.status_code == 401 and "Wrong e-mail or password, or the address" in r.text
    r = await sign_in(browser, "nobody@example.com")
    assert r.status_code == 401 and "Wrong e-mail or password, or the address" in r.text
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(WebSession)) == 0


async def test_the_login_form_refuses_a_post_without_its_csrf_token(browser, people, sessions):
    await browser.get("/login")
    r = await browser.post("/login", data={"email": "alice@example.com", "password": PASSWORD,
                                           "csrf_token": "forged"})
    assert r.status_code == 403
    fresh = httpx.AsyncClient(transport=browser._transport, base_url="http://test")
    r = await fresh.post("/login", data={"email": "alice@example.com", "password": PASSWORD})
    assert r.status_code == 403
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(WebSession)) == 0


async def test_signed_in_forms_refuse_a_missing_or_foreign_csrf_token(engine, db_url, people):
    app = create_app(page_settings(db_url), engine=engine, start_workers=False)
    async with app.router.lifespan_context(app):
        t = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=t, base_url="http://test") as alice, \
                httpx.AsyncClient(transport=t, base_url="http://test") as bob:
            await sign_in(alice, "alice@example.com")
            await sign_in(bob, "bob@example.com")
            bobs = csrf_of((await bob.get("/dashboard")).text)
            for data in ({}, {"csrf_token": ""}, {"csrf_token": bobs}):
                r = await alice.post("/logout", data=data)
                assert r.status_code == 403, data
                assert "did not come from this site" in r.text
            assert (await alice.get("/dashboard")).status_code == 200  # still signed in
            r = await alice.post("/logout", headers={"X-CSRF-Token": bobs})
            assert r.status_code == 403


async def test_sign_out_revokes_the_session_server_side(browser, people):
    await sign_in(browser, "alice@example.com")
    token = browser.cookies["sv_session"]
    page = await browser.get("/dashboard")
    r = await browser.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    browser.cookies.set("sv_session", token, domain="test.local")  # the old one, replayed
    assert (await browser.get("/dashboard")).status_code == 303


async def test_a_planted_session_id_is_never_promoted(browser, people, sessions):
    """Session fixation: whatever cookie the browser had, signing in issues a new one."""
    browser.cookies.set("sv_session", "planted-by-an-attacker", domain="test.local")
    r = await sign_in(browser, "alice@example.com")
    assert browser.cookies["sv_session"] != "planted-by-an-attacker"
    assert r.status_code == 303
    old = browser.cookies["sv_session"]
    page = await browser.get("/login")  # signed in already: on to the dashboard
    assert page.status_code == 303 and page.headers["location"] == "/dashboard"
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(WebSession)) == 1
    assert old != "planted-by-an-attacker"


async def test_expired_and_idle_sessions_are_refused(browser, people, clock):
    await sign_in(browser, "alice@example.com")
    assert (await browser.get("/dashboard")).status_code == 200
    clock.advance(seconds=IDLE_TIMEOUT.total_seconds() + 1)
    assert (await browser.get("/dashboard")).status_code == 303
    await sign_in(browser, "alice@example.com")
    for _ in range(int(ABSOLUTE_LIFETIME / IDLE_TIMEOUT) + 1):
        clock.advance(seconds=IDLE_TIMEOUT.total_seconds() - 60)
        r = await browser.get("/dashboard")
    assert r.status_code == 303  # active all along, but past its absolute lifetime


async def test_next_never_leaves_the_site(browser, people):
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x"):
        browser.cookies.clear()
        r = await sign_in(browser, "alice@example.com", next_path=evil)
        assert r.headers["location"] == "/dashboard", evil


async def test_an_admin_lands_on_the_console(browser, people, sessions, clock):
    """Past the second factor (an admin without TOTP is sent to enroll: tests/auth)."""
    import pyotp

    from satvault.auth import totp

    async with sessions() as s, s.begin():
        enrollment = await totp.begin_enrollment(s, user_id=people.root)
        code = pyotp.TOTP(enrollment.secret)
        await totp.confirm_enrollment(s, user_id=people.root, code=code.at(clock.now()))
    clock.advance(seconds=30)
    r = await sign_in(browser, "root@example.com")
    assert r.headers["location"].startswith("/login/totp")
    step = await browser.get("/login/totp")
    r = await browser.post("/login/totp", data={"csrf_token": csrf_of(step.text),
                                                "code": code.at(clock.now())})
    assert r.headers["location"] == "/admin"


async def test_the_language_is_the_users_choice(browser, people):
    await sign_in(browser, "alice@example.com")
    page = await browser.get("/dashboard", headers={"Accept-Language": "ja"})
    assert '<html lang="ja"' in page.text
    r = await browser.post("/account/language", data={"csrf_token": csrf_of(page.text),
                                                       "language": "zh", "next": "/dashboard"})
    assert r.status_code == 303
    page = await browser.get("/dashboard", headers={"Accept-Language": "ja"})
    assert '<html lang="zh-Hans"' in page.text
    r = await browser.post("/account/language", data={"csrf_token": csrf_of(page.text),
                                                       "language": "xx"})
    assert r.status_code == 422 and "<html" in r.text


async def test_static_files_are_served_by_satvault(browser):
    page = await browser.get("/login")
    assert 'src="/static/htmx.min.js?v=' in page.text
    css = await browser.get("/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "immutable" in css.headers["cache-control"]
    assert (await browser.get("/static/missing.js")).status_code == 404


async def test_the_second_factor_returns_to_the_whole_page_asked_for(browser, people,
                                                                     sessions, clock):
    """Found from outside: the TOTP step kept ``next`` only up to its first ``&`` (it went
    into the step's URL unquoted), so an admin asking for a filtered page landed on another
    one."""
    import html
    import re

    import pyotp

    from satvault.auth import totp

    async with sessions() as s, s.begin():
        enrollment = await totp.begin_enrollment(s, user_id=people.root)
        code = pyotp.TOTP(enrollment.secret)
        await totp.confirm_enrollment(s, user_id=people.root, code=code.at(clock.now()))
    clock.advance(seconds=30)
    wanted = "/admin/audit?actor=admin&action=auth.signin"
    r = await sign_in(browser, "root@example.com", next_path=wanted)
    step = await browser.get(r.headers["location"])
    found = re.search(r'name="next" value="([^"]*)"', step.text)
    assert found is not None and html.unescape(found.group(1)) == wanted, step.text
    r = await browser.post("/login/totp", data={"csrf_token": csrf_of(step.text),
                                                "code": code.at(clock.now()),
                                                "next": html.unescape(found.group(1))})
    assert r.headers["location"] == wanted
