"""What an outside review of the factors found (stop 32), each through the public surface:
the lockout is per factor, so knowing the sign-in password buys no guesses at the payment
password; the payment password is replaced only after it (or TOTP) was re-proved; every form
that checks a password counts it and is refused while locked; a pending sign-up cannot be
pre-claimed; and a suspended user's API keys stop working."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from satvault.accounts import service as acc
from satvault.accounts.models import User, UserStatus
from satvault.audit.models import AuditEvent
from satvault.auth import stepup
from satvault.auth.models import Credentials
from tests.auth import test_pages
from tests.auth.test_api import PASSWORD, password_grant, signed_up
from tests.auth.test_pages import post_form, sign_in
from tests.web.pages.conftest import csrf_of
from tests.web.test_api import auth, client_for

PAY = "pay me carefully"
browsers, browser = test_pages.browsers, test_pages.browser  # the dashboard's fixtures


async def creds_of(sessions, user_id: str) -> Credentials:
    async with sessions() as s:
        found = await s.get(Credentials, user_id)
    assert found is not None
    return found


async def test_payment_password_guesses_through_the_password_grant_lock_the_account(
        client, mailbox, sessions):
    """The right sign-in password with a wrong payment password, six times: each guess is
    counted (the right sign-in password of the next request used to clear the count), the
    account locks at the fifth, and the right payment password is then refused too."""
    email = "guess@example.com"
    user_id = await signed_up(client, mailbox, email)
    async with sessions() as s, s.begin():
        await stepup.set_payment_password(s, user_id=user_id, password=PASSWORD,
                                          payment_password=PAY)
    for i in range(6):
        r = await password_grant(client, email, payment_password=f"wrong guess {i}")
        assert r.status_code == (401 if i < 5 else 429), r.text
    creds = await creds_of(sessions, user_id)
    assert creds.failed_stepups == 5 and creds.stepup_locked_until is not None
    r = await password_grant(client, email, payment_password=PAY)
    assert r.status_code == 429 and "withdrawals:write" not in r.text, r.text


async def test_signing_in_does_not_clear_the_payment_passwords_failures(browser, sessions):
    """Guesses at the step-up form, then a sign-in with the right password: the payment
    password's count stays; a right step-up clears it."""
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="pp@example.com", password=PASSWORD)
        await stepup.set_payment_password(s, user_id=user.id, password=PASSWORD,
                                          payment_password=PAY)
    await sign_in(browser, "pp@example.com")
    for i in range(3):
        r = await post_form(browser, "/account/step-up", "/account/step-up",
                            payment_password=f"guess {i}", next="/dashboard")
        assert r.status_code == 401
    await sign_in(browser, "pp@example.com")
    assert (await creds_of(sessions, user.id)).failed_stepups == 3
    r = await post_form(browser, "/account/step-up", "/account/step-up",
                        payment_password=PAY, next="/dashboard")
    assert r.status_code == 303
    creds = await creds_of(sessions, user.id)
    assert (creds.failed_stepups, creds.failed_signins) == (0, 0)


async def test_the_payment_password_is_replaced_only_after_a_step_up(browser, sessions):
    """Whoever knows only the sign-in password (phished) cannot replace the payment password
    with one of their own and then step up: replacing it sends them to the step-up first,
    which asks for the payment password they do not know. The owner steps up, then replaces
    it."""
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="victim@example.com", password=PASSWORD)
        await stepup.set_payment_password(s, user_id=user.id, password=PASSWORD,
                                          payment_password="the owner's secret")
    await sign_in(browser, "victim@example.com")
    r = await post_form(browser, "/account/security", "/account/payment-password",
                        current=PASSWORD, payment_password="the phisher's own",
                        payment_password_again="the phisher's own")
    assert r.status_code == 303
    assert r.headers["location"] == "/account/step-up?next=/account/security"
    step = await post_form(browser, "/account/step-up", "/account/step-up",
                           payment_password="the phisher's own", next="/dashboard")
    assert step.status_code == 401
    step = await post_form(browser, "/account/step-up", "/account/step-up",
                           payment_password="the owner's secret", next="/account/security")
    assert step.status_code == 303
    r = await post_form(browser, "/account/security", "/account/payment-password",
                        current=PASSWORD, payment_password="the owner's new one",
                        payment_password_again="the owner's new one")
    assert r.status_code == 200 and "Payment password set" in r.text


async def test_the_payment_password_form_counts_wrong_sign_in_passwords(browser, sessions):
    """A hijacked session guessing the sign-in password through the payment-password form:
    each wrong one counts, and once locked even the right one is not checked."""
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="pp@example.com", password=PASSWORD)
    await sign_in(browser, "pp@example.com")
    page = await browser.get("/account/security")
    for i in range(5):
        r = await browser.post("/account/payment-password", data={
            "csrf_token": csrf_of(page.text), "current": f"guess number {i}",
            "payment_password": PAY, "payment_password_again": PAY})
        assert r.status_code == 422 and "sign-in password is not right" in r.text
    creds = await creds_of(sessions, user.id)
    assert creds.failed_stepups == 5 and creds.stepup_locked_until is not None
    r = await browser.post("/account/payment-password", data={
        "csrf_token": csrf_of(page.text), "current": PASSWORD,
        "payment_password": PAY, "payment_password_again": PAY})
    assert r.status_code == 422 and "Too many failed attempts" in r.text
    assert (await creds_of(sessions, user.id)).payment_password_hash is None


async def test_the_password_change_is_refused_while_locked(browser, sessions):
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="chg@example.com", password=PASSWORD)
    await sign_in(browser, "chg@example.com")
    page = await browser.get("/account/security")
    for i in range(5):
        r = await browser.post("/account/password", data={
            "csrf_token": csrf_of(page.text), "current": f"guess number {i}",
            "password": "brand new password", "password_again": "brand new password"})
        assert r.status_code == 422
    assert (await creds_of(sessions, user.id)).stepup_locked_until is not None
    r = await browser.post("/account/password", data={
        "csrf_token": csrf_of(page.text), "current": PASSWORD,
        "password": "brand new password", "password_again": "brand new password"})
    assert r.status_code == 422 and "Too many failed attempts" in r.text
    async with sessions() as s:
        assert (await s.get(User, user.id)).password_hash == user.password_hash


async def test_the_sign_in_password_cannot_become_the_payment_password(browser, sessions):
    """Refused, and counted as a guess at the payment password (the refusal tells what it
    is, so uncounted it would be a way to guess it)."""
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="same@example.com", password=PASSWORD)
        await stepup.set_payment_password(s, user_id=user.id, password=PASSWORD,
                                          payment_password=PAY)
    await sign_in(browser, "same@example.com")
    r = await post_form(browser, "/account/security", "/account/password", current=PASSWORD,
                        password=PAY, password_again=PAY)
    assert r.status_code == 422 and "must differ from the payment password" in r.text
    assert (await creds_of(sessions, user.id)).failed_stepups == 1
    r = await post_form(browser, "/account/security", "/account/password", current=PASSWORD,
                        password="another new one", password_again="another new one")
    assert r.status_code == 200 and "Password changed" in r.text


@pytest.mark.parametrize("victim_first", [False, True])
async def test_a_pending_address_is_confirmed_only_with_its_own_sign_ups_password(
        client, mailbox, sessions, victim_first):
    """Someone signs up with the victim's address before the victim (pre-account hijacking),
    or after the victim and before the victim follows the link (found from outside: the
    second sign-up took the password and spent the victim's link, and the victim's next link
    set the stranger's password). Each link confirms the sign-up that sent it, with that
    sign-up's password: the victim's link with the victim's password, whatever else was
    signed up meanwhile; the stranger's link (in the victim's mailbox) with the victim's
    password changes nothing."""
    victim = "victim@example.com"
    order = [("victim's own password", "mine"), ("attacker's password", "theirs")]
    links = {}
    for password, who in (order if victim_first else order[::-1]):
        r = await client.post("/api/v1/auth/signup", json={"email": victim, "password": password})
        assert r.status_code == 202
        links[who] = mailbox.last_link(victim, "/verify")
    # Pending, the chosen password or not: the same answer as a wrong one (no enumeration).
    wrong = await password_grant(client, victim, "not the password")
    pending = await password_grant(client, victim, "attacker's password")
    assert (wrong.status_code, wrong.json()["detail"]) == \
        (pending.status_code, pending.json()["detail"]) == (401, pending.json()["detail"])
    # The stranger's link, followed by the victim with the victim's password: refused, kept.
    r = await client.post("/api/v1/auth/verify",
                          json={"token": links["theirs"], "password": "victim's own password"})
    assert r.status_code == 422 and "password you chose" in r.json()["detail"], r.text
    r = await client.post("/api/v1/auth/verify", json={"token": links["mine"]})
    assert r.status_code == 422, r.text  # a link needs its password
    r = await client.post("/api/v1/auth/verify",
                          json={"token": links["mine"], "password": "victim's own password"})
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    assert (await password_grant(client, victim, "attacker's password")).status_code == 401
    assert (await password_grant(client, victim, "victim's own password")).status_code == 200
    # Every other link of the sign-up is spent now.
    r = await client.post("/api/v1/auth/verify",
                          json={"token": links["theirs"], "password": "attacker's password"})
    assert r.status_code == 422, r.text
    assert (await password_grant(client, victim, "attacker's password")).status_code == 401
    async with sessions() as s:
        again = (await s.execute(select(AuditEvent.action).where(
            AuditEvent.action == "auth.signup_again"))).scalars().all()
    assert again == ["auth.signup_again"]


async def test_the_api_keys_of_a_suspended_user_and_their_merchants_are_refused(
        engine, db_url, sessions):
    async with sessions() as s, s.begin():
        mallory = await acc.create_user(s, email="mallory@example.com")
        _, key = await acc.create_api_key(s, owner_id=mallory.id,
                                          scopes=["wallet:read", "withdrawals:write"])
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=mallory.id)
        shop = await acc.create_merchant(s, name="Mallory's shop", owner_user_id=mallory.id)
        store = await acc.create_store(s, merchant_id=shop.id, name="Web")
        _, store_key = await acc.create_api_key(s, owner_id=store.id,
                                                scopes=["invoices:read"])
        _, shop_key = await acc.create_api_key(s, owner_id=shop.id, scopes=["wallet:read"])
        shop_wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=shop.id)
    async with client_for(engine, db_url) as client:
        r = await client.get(f"/api/v1/wallets/{wallet.id}", headers=auth(key))
        assert r.status_code == 200, r.text
        r = await client.get(f"/api/v1/stores/{store.id}/invoices", headers=auth(store_key))
        assert r.status_code == 200, r.text
        r = await client.get(f"/api/v1/wallets/{shop_wallet.id}", headers=auth(shop_key))
        assert r.status_code == 200, r.text
    async with sessions() as s, s.begin():
        await s.execute(update(User).where(User.id == mallory.id)
                        .values(status=UserStatus.SUSPENDED))
    async with client_for(engine, db_url) as client:  # a new process: nothing cached
        for token, path in ((key, f"/api/v1/wallets/{wallet.id}"),
                            (store_key, f"/api/v1/stores/{store.id}/invoices"),
                            (shop_key, f"/api/v1/wallets/{shop_wallet.id}")):
            r = await client.get(path, headers=auth(token))
            assert r.status_code == 401 and "suspended" in r.json()["detail"], (path, r.text)
