"""The sign-in pages under the same budgets as their API twins (found from outside): the
forms that check a password or a code count each failure against the client address's
failed-authentication budget, the signed-out ones refuse (429) once it is used; the TOTP
enrollment's confirmation counts wrong codes towards the account's lockout; sign-up and
password reset spend the per-address creation budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.accounts.models import User
from satvault.auth.models import Credentials
from satvault.web.app import create_app
from tests.auth.conftest import settings_for
from tests.auth.test_pages import _SECRET, PASSWORD, post_form, sign_in
from tests.web.pages.conftest import csrf_of


@pytest.fixture
async def app(engine: Any, db_url: str, smtp: Any) -> AsyncIterator[Any]:
    app = create_app(settings_for(db_url, smtp[1], rate_limit_storage="memory",
                                  rate_limit_auth_failures_per_address="4/minute",
                                  rate_limit_public_create="3/minute"),
                     engine=engine, start_workers=False)
    async with app.router.lifespan_context(app):
        yield app


def browser_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sv.test")


async def test_failed_sign_ins_on_the_pages_spend_the_addresss_budget(app, sessions):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="amy@example.com", password=PASSWORD)
        await acc.create_user(s, email="bob@example.com", password=PASSWORD)
    async with browser_of(app) as amy, browser_of(app) as spray:
        assert (await sign_in(amy, "amy@example.com")).status_code == 303
        # A signed-in form's wrong password counts too (it is a guess at the same secret).
        page = await amy.get("/account/security")
        r = await amy.post("/account/password", data={
            "csrf_token": csrf_of(page.text), "current": "not my password",
            "password": "another password", "password_again": "another password"})
        assert r.status_code == 422 and "not right" in r.text
        # Password spraying: unknown and known accounts alike, through the form and the API.
        assert (await sign_in(spray, "nobody@example.com", "guess one")).status_code == 401
        assert (await sign_in(spray, "bob@example.com", "guess two")).status_code == 401
        api = await spray.post("/api/v1/auth/token", json={
            "grant_type": "password", "email": "nobody2@example.com", "password": "guess 3"})
        assert api.status_code == 401
        # The budget (4) is used: the form refuses before any password is checked, the
        # right one included, as the API does.
        for email, password in (("bob@example.com", "guess four"),
                                ("bob@example.com", PASSWORD)):
            r = await sign_in(spray, email, password)
            assert r.status_code == 429 and "retry-after" in r.headers, r.text
        r = await spray.post("/api/v1/auth/token", json={
            "grant_type": "password", "email": "bob@example.com", "password": PASSWORD})
        assert r.status_code == 429
    async with sessions() as s:
        bob = (await s.execute(select(User).where(User.email == "bob@example.com"))).scalar_one()
        creds = await s.get(Credentials, bob.id)
        assert creds.failed_signins == 1  # the refused tries never reached the account


async def test_the_totp_steps_code_spends_the_addresss_budget(app, sessions, clock):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="cy@example.com", password=PASSWORD)
    async with browser_of(app) as cy:
        assert (await sign_in(cy, "cy@example.com")).status_code == 303
        page = await cy.get("/account/totp/enroll")
        started = await cy.post("/account/totp/enroll", data={"csrf_token": csrf_of(page.text)})
        totp = pyotp.TOTP(_SECRET.search(started.text).group(1))
        done = await cy.post("/account/totp/confirm", data={
            "csrf_token": csrf_of(started.text), "code": totp.at(clock.now())})
        assert done.status_code == 200, done.text
    clock.advance(seconds=30)
    async with browser_of(app) as guesser:
        assert (await sign_in(guesser, "cy@example.com")).status_code == 303  # to the step
        step = await guesser.get("/login/totp")
        for code in ("000001", "000002", "000003", "000004"):
            r = await guesser.post("/login/totp", data={"csrf_token": csrf_of(step.text),
                                                        "code": code})
            assert r.status_code == 401, r.text
        r = await guesser.post("/login/totp", data={"csrf_token": csrf_of(step.text),
                                                    "code": totp.at(clock.now())})
        assert r.status_code == 429, r.text


async def test_wrong_codes_confirming_an_enrollment_count_towards_the_lockout(
        engine, db_url, smtp, sessions, clock):
    """Found from outside: the security page's confirmation of a pending TOTP secret took
    wrong codes without counting them (about 100 guesses a second from one session, ~330,000
    expected to find the code); the API's twin locked the account after five. The count is
    the service's now (``totp.confirm_enrollment``), so no caller can forget it."""
    app = create_app(settings_for(db_url, smtp[1], rate_limit_enabled=False), engine=engine,
                     start_workers=False)
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="dee@example.com", password=PASSWORD)
    async with app.router.lifespan_context(app), browser_of(app) as dee:
        assert (await sign_in(dee, "dee@example.com")).status_code == 303
        page = await dee.get("/account/totp/enroll")
        started = await dee.post("/account/totp/enroll",
                                 data={"csrf_token": csrf_of(page.text)})
        totp = pyotp.TOTP(_SECRET.search(started.text).group(1))
        token = csrf_of(started.text)
        for code in ("000001", "000002", "000003", "000004", "000005"):
            r = await dee.post("/account/totp/confirm", data={"csrf_token": token,
                                                              "code": code})
            assert r.status_code == 422 and "not right" in r.text, r.text
        # Locked: even the right code is not looked at, and nothing is turned on.
        r = await dee.post("/account/totp/confirm", data={"csrf_token": token,
                                                          "code": totp.at(clock.now())})
        assert r.status_code == 429 and "Too many failed attempts" in r.text, r.text
        async with sessions() as s:
            creds = await s.get(Credentials, user.id)
            assert creds.failed_stepups == 5 and creds.stepup_locked_until is not None
            assert creds.totp_confirmed_at is None
        clock.advance(seconds=61)
        r = await dee.post("/account/totp/confirm", data={"csrf_token": token,
                                                          "code": totp.at(clock.now())})
        assert r.status_code == 200 and "<code>" in r.text, r.text


async def test_sign_up_and_reset_forms_spend_the_public_creation_budget(app, sessions,
                                                                       mailbox):
    """Found from outside: 40 reset requests (40 mails with live links) and 35 sign-ups
    for one address went through the pages, whose API twins stop at the budget."""
    async with browser_of(app) as c:
        for _ in range(3):
            r = await post_form(c, "/password-reset", "/password-reset",
                                email="victim@example.com")
            assert r.status_code == 200, r.text
        r = await post_form(c, "/password-reset", "/password-reset",
                            email="victim@example.com")
        assert r.status_code == 429 and "retry-after" in r.headers
        r = await post_form(c, "/signup", "/signup", email="victim@example.com",
                            password=PASSWORD, password_again=PASSWORD)
        assert r.status_code == 429
    async with sessions() as s:
        assert (await s.execute(select(User).where(User.email == "victim@example.com"))
                ).scalar_one_or_none() is None
