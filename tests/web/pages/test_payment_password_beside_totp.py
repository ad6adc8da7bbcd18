"""A user who has TOTP and no payment password: the step-up for money is the TOTP code.
Whoever holds the session and the sign-in password (not the TOTP device) could give the
account a payment password of their own and step up with it (found from outside, stop 32):
setting one beside TOTP now needs the TOTP step-up, as replacing one needs a step-up."""

from __future__ import annotations

import httpx
import pyotp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import ApiKey
from tests.auth.test_pages import enroll_totp
from tests.web.pages.conftest import PASSWORD, People, csrf_of, sign_in
from tests.web.pages.merchant_helpers import fresh


async def test_totp_user_cannot_get_a_payment_password_without_the_totp_step_up(
        browser: httpx.AsyncClient, people: People,
        sessions: async_sessionmaker[AsyncSession], clock) -> None:
    r = await sign_in(browser, "alice@example.com")
    assert r.status_code == 303
    totp, _ = await enroll_totp(browser, clock)  # the owner turns TOTP on
    assert isinstance(totp, pyotp.TOTP)
    clock.advance(minutes=10)  # any step-up of the enrollment is long over

    # The attacker: a live session and the (phished) sign-in password, no TOTP device.
    page = await browser.get("/account/security")
    r = await browser.post("/account/payment-password", data={
        "csrf_token": csrf_of(page.text), "current": PASSWORD,
        "payment_password": "attacker's own", "payment_password_again": "attacker's own"})
    step = await browser.get("/account/step-up?next=/dashboard")
    r2 = await browser.post("/account/step-up", data={
        "csrf_token": csrf_of(step.text), "payment_password": "attacker's own",
        "next": "/dashboard"})
    keys = f"/dashboard/m/{people.alice_merchant}/keys"
    page = await browser.get(keys)
    r3 = await browser.post(keys, data={**fresh(), "csrf_token": csrf_of(page.text),
                                        "label": "mine", "owner_id": people.alice_merchant,
                                        "scopes": ["withdrawals:write", "wallet:read"]})
    async with sessions() as s:
        made = (await s.execute(select(ApiKey))).scalars().all()
    assert r.status_code == 303
    assert r.headers["location"] == "/account/step-up?next=/account/security"
    assert r2.status_code != 303, "stepped up without the TOTP device"
    assert r3.status_code != 201 and made == [], "a withdrawal key made without TOTP"
    # The owner steps up with the device, then sets one.
    step = await browser.get("/account/step-up?next=/account/security")
    r = await browser.post("/account/step-up", data={
        "csrf_token": csrf_of(step.text), "code": totp.at(clock.now()),
        "next": "/account/security"})
    assert r.status_code == 303, r.text
    page = await browser.get("/account/security")
    r = await browser.post("/account/payment-password", data={
        "csrf_token": csrf_of(page.text), "current": PASSWORD,
        "payment_password": "the owner's own", "payment_password_again": "the owner's own"})
    assert "Payment password set" in r.text
