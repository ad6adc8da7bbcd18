"""Known gap closed (reported from outside at stop 32): a stolen dashboard session, or a
stolen refresh token, could turn TOTP on for an account that has none, with the thief's
authenticator, and the owner could no longer sign in (a password reset does not turn it off).

Turning TOTP on now needs the account holder, not only their session: a sign-in within the
last ten minutes (the session's, or the token family's), or the sign-in password given with
the request. A wrong password is a guess like any other: counted towards the lockout, and
refused while the account is locked."""

from __future__ import annotations

from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.auth.models import Credentials
from tests.auth import test_pages
from tests.auth.test_api import bearer, password_grant, signed_up
from tests.auth.test_pages import PASSWORD, sign_in
from tests.web.pages.conftest import csrf_of

browsers, browser = test_pages.browsers, test_pages.browser  # the dashboard's fixtures


async def _creds(sessions, user_id: str) -> Credentials:
    async with sessions() as s:
        row = (await s.execute(select(Credentials).where(Credentials.user_id == user_id))
               ).scalar_one_or_none()
        return row if row is not None else Credentials(user_id=user_id, failed_signins=0)


async def _start(browser, **fields: str):
    page = await browser.get("/account/totp/enroll")
    assert page.status_code == 200, page.text
    return page, await browser.post("/account/totp/enroll",
                                    data={"csrf_token": csrf_of(page.text), **fields})


async def test_an_old_session_needs_the_password_to_turn_totp_on(browser, sessions, clock):
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="tia@example.com", password=PASSWORD)
    assert (await sign_in(browser, "tia@example.com")).status_code == 303
    clock.advance(minutes=11)  # the session is still good (idle 2 h), the sign-in is not fresh

    page, r = await _start(browser)
    assert "sign-in password" in page.text  # the form asks for it
    assert r.status_code == 403, r.text
    assert "<svg" not in r.text and "sign-in password" in r.text
    assert (await _creds(sessions, user.id)).totp_secret is None  # nothing started

    _, r = await _start(browser, password="not the password")
    assert r.status_code == 403 and "<svg" not in r.text
    creds = await _creds(sessions, user.id)
    assert creds.totp_secret is None and creds.failed_stepups == 1  # a counted guess

    _, r = await _start(browser, password=PASSWORD)
    assert r.status_code == 200 and "<svg" in r.text, r.text
    assert (await _creds(sessions, user.id)).totp_secret is not None


async def test_a_fresh_sign_in_turns_it_on_without_asking_again(browser, sessions, clock):
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="ugo@example.com", password=PASSWORD)
    assert (await sign_in(browser, "ugo@example.com")).status_code == 303
    clock.advance(minutes=9)
    page, r = await _start(browser)
    assert "sign-in password" not in page.text
    assert r.status_code == 200 and "<svg" in r.text, r.text
    assert (await _creds(sessions, user.id)).totp_secret is not None


async def test_the_password_guesses_lock_the_form(browser, sessions, clock):
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="val@example.com", password=PASSWORD)
    assert (await sign_in(browser, "val@example.com")).status_code == 303
    clock.advance(minutes=11)
    for _ in range(5):
        _, r = await _start(browser, password="wrong guess")
        assert r.status_code == 403
    _, r = await _start(browser, password=PASSWORD)  # right, but the account is locked now
    assert r.status_code == 429 and "<svg" not in r.text, r.text
    assert (await _creds(sessions, user.id)).totp_secret is None


async def test_over_the_api_a_refreshed_token_needs_the_password(client, mailbox, clock,
                                                                 sessions):
    email = "wes@example.com"
    user_id = await signed_up(client, mailbox, email)
    first = (await password_grant(client, email)).json()
    clock.advance(minutes=11)
    again = (await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"]})).json()
    me = bearer(again["access_token"])  # a valid token, of a sign-in 11 minutes old

    r = await client.post("/api/v1/auth/totp", headers=me)
    assert r.status_code == 403 and "password" in r.json()["detail"], r.text
    r = await client.post("/api/v1/auth/totp", headers=me, json={"password": "wrong"})
    assert r.status_code == 401, r.text
    creds = await _creds(sessions, user_id)
    assert creds.totp_secret is None and creds.failed_stepups == 1
    r = await client.post("/api/v1/auth/totp", headers=me, json={"password": PASSWORD})
    assert r.status_code == 201 and r.json()["secret"], r.text

    # A fresh sign-in needs nothing more.
    fresh = bearer((await password_grant(client, "wes@example.com")).json()["access_token"])
    r = await client.post("/api/v1/auth/totp", headers=fresh)
    assert r.status_code == 201, r.text
