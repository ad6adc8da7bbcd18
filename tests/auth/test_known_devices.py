"""Found from outside (a known gap until stop 40): anyone could keep an account locked out,
about one wrong password an hour from anywhere, and as every factor shared the one lock, the
owner's session could not step up for a withdrawal either. A browser or API client that
completed a sign-in is now a known device: the account's lock does not hold it back, and its
own failures lock it alone; the step-up factors lock apart from the sign-in form.
(migration 0081, ``satvault.auth.devices``)"""

from __future__ import annotations

import json

from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.audit.models import AuditEvent
from satvault.auth import stepup
from satvault.auth.devices import MAX_DEVICES
from tests.auth import test_pages
from tests.auth.test_api import PASSWORD, password_grant
from tests.auth.test_pages import post_form, sign_in
from tests.web.pages.conftest import csrf_of

PAY = "pay me carefully"
LOCKED = "Too many failed attempts"
browsers, browser = test_pages.browsers, test_pages.browser  # the dashboard's fixtures


async def lock_out(client, email: str, *, api: bool = False) -> None:
    """A stranger's five wrong passwords, then the right one refused: the account is locked
    for unknown devices."""
    for i in range(5):
        r = await (password_grant(client, email, f"wrong guess {i}") if api
                   else sign_in(client, email, f"wrong guess {i}"))
        assert r.status_code == 401, r.text
    r = await (password_grant(client, email) if api else sign_in(client, email))
    assert r.status_code == (429 if api else 401), r.text
    if not api:
        assert LOCKED in r.text


async def test_a_stranger_cannot_keep_the_owner_out_of_a_browser_they_signed_in_with(
        browsers, sessions, clock):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="own@example.com", password=PASSWORD)
    owner, stranger = browsers.new(), browsers.new()
    r = await sign_in(owner, "own@example.com")
    assert r.status_code == 303 and "sv_device" in r.headers["set-cookie"]
    await lock_out(stranger, "own@example.com")
    # The owner's browser is not held back, again and again while the stranger goes on.
    assert (await sign_in(owner, "own@example.com")).status_code == 303
    clock.advance(seconds=61)
    assert (await sign_in(stranger, "own@example.com", "one more guess")).status_code == 401
    assert LOCKED in (await sign_in(stranger, "own@example.com")).text
    assert (await sign_in(owner, "own@example.com")).status_code == 303
    # Signing in from the known device cleared nothing of the stranger's count.
    clock.advance(seconds=119)
    assert LOCKED in (await sign_in(stranger, "own@example.com")).text
    # A new browser, or a forged device cookie, is a stranger.
    forged = browsers.new()
    forged.cookies.set("sv_device", "not-a-device-token", domain="sv.test", path="/login")
    assert LOCKED in (await sign_in(forged, "own@example.com")).text


async def test_a_known_devices_own_failures_lock_that_device_alone(browsers, sessions, clock):
    """A device cookie is no way around the lockout: its wrong passwords lock it, with the
    same back-off, and leave the account's count alone."""
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="dev@example.com", password=PASSWORD)
    known, other = browsers.new(), browsers.new()
    assert (await sign_in(known, "dev@example.com")).status_code == 303
    await lock_out(known, "dev@example.com")
    assert (await sign_in(other, "dev@example.com")).status_code == 303  # account not locked
    clock.advance(seconds=61)
    assert (await sign_in(known, "dev@example.com")).status_code == 303
    async with sessions() as s:
        locks = list((await s.execute(select(AuditEvent).where(
            AuditEvent.action == "auth.locked", AuditEvent.object == user.id))).scalars())
    assert [json.loads(row.state_after)["lock"] for row in locks] == ["device"]


async def test_the_owners_session_steps_up_while_the_sign_in_form_is_locked(
        browsers, sessions):
    """The stranger's guesses at the sign-in form no longer lock the step-up of a session
    already open; guesses at the step-up itself still lock it (and not the sign-in)."""
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="up@example.com", password=PASSWORD)
        await stepup.set_payment_password(s, user_id=user.id, password=PASSWORD,
                                          payment_password=PAY)
    owner, stranger = browsers.new(), browsers.new()
    assert (await sign_in(owner, "up@example.com")).status_code == 303
    await lock_out(stranger, "up@example.com")
    r = await post_form(owner, "/account/step-up", "/account/step-up",
                        payment_password=PAY, next="/dashboard")
    assert r.status_code == 303, r.text
    assert (await owner.post("/test/money")).json() == {"ok": True}
    for i in range(5):
        r = await post_form(owner, "/account/step-up", "/account/step-up",
                            payment_password=f"guess {i}", next="/dashboard")
        assert r.status_code == 401, r.text
    r = await post_form(owner, "/account/step-up", "/account/step-up",
                        payment_password=PAY, next="/dashboard")
    assert r.status_code == 401 and LOCKED in r.text, r.text
    assert (await sign_in(owner, "up@example.com")).status_code == 303


async def test_signing_out_everywhere_forgets_the_devices(browsers, sessions):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="out@example.com", password=PASSWORD)
    owner, stranger = browsers.new(), browsers.new()
    assert (await sign_in(owner, "out@example.com")).status_code == 303
    page = await owner.get("/account/security")
    r = await owner.post("/account/sessions/revoke-all",
                         data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303
    await lock_out(stranger, "out@example.com")
    assert LOCKED in (await sign_in(owner, "out@example.com")).text


async def test_totp_codes_from_a_known_device_pass_the_accounts_lock(browsers, sessions,
                                                                     clock):
    """A stranger who has the password and guesses codes locks the account for unknown
    devices; the owner's known browser gives password and code and is in."""
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="two@example.com", password=PASSWORD)
    owner, stranger = browsers.new(), browsers.new()
    assert (await sign_in(owner, "two@example.com")).status_code == 303
    totp, _codes = await test_pages.enroll_totp(owner, clock)
    for i in range(5):
        r = await sign_in(stranger, "two@example.com")
        assert r.status_code == 303 and "/login/totp" in r.headers["location"], r.text
        page = await stranger.get("/login/totp")
        r = await stranger.post("/login/totp", data={"csrf_token": csrf_of(page.text),
                                                     "code": f"00000{i}"})
        assert r.status_code == 401, r.text
    assert LOCKED in (await sign_in(stranger, "two@example.com")).text
    r = await sign_in(owner, "two@example.com")
    assert r.status_code == 303 and "/login/totp" in r.headers["location"], r.text
    page = await owner.get("/login/totp")
    r = await owner.post("/login/totp", data={"csrf_token": csrf_of(page.text),
                                              "code": totp.at(clock.now())})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard", r.text


async def test_an_api_client_remembers_its_device(client, sessions, clock):
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="api@example.com", password=PASSWORD)
        other = await acc.create_user(s, email="other@example.com", password=PASSWORD)
    r = await password_grant(client, "api@example.com")
    assert r.status_code == 200 and r.json()["device_token"] is None  # not asked for
    r = await password_grant(client, "api@example.com", remember_device=True)
    device = r.json()["device_token"]
    assert r.status_code == 200 and device, r.text
    r = await password_grant(client, "other@example.com", remember_device=True)
    others_device = r.json()["device_token"]
    await lock_out(client, "api@example.com", api=True)
    r = await password_grant(client, "api@example.com", device_token=device)
    assert r.status_code == 200 and r.json()["device_token"] is None, r.text  # it stands
    for stranger in (others_device, "x" * 43):
        r = await password_grant(client, "api@example.com", device_token=stranger)
        assert r.status_code == 429 and r.json()["type"].endswith("/account-locked"), r.text
    assert user.id != other.id
    r = await password_grant(client, "api@example.com", remember_device="yes")
    assert r.status_code == 422, r.text


async def test_a_user_keeps_the_devices_used_last(client, sessions, clock):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="many@example.com", password=PASSWORD)

    async def new_device() -> str:
        clock.advance(seconds=1)
        r = await password_grant(client, "many@example.com", remember_device=True)
        assert r.status_code == 200 and r.json()["device_token"], r.text
        return r.json()["device_token"]

    first, second = await new_device(), await new_device()
    for _ in range(MAX_DEVICES - 2):
        await new_device()
    # The second used again: the first is now the least recently used, and one device more
    # than the cap forgets it.
    clock.advance(seconds=1)
    assert (await password_grant(client, "many@example.com",
                                 device_token=second)).json()["device_token"] is None
    await new_device()
    await lock_out(client, "many@example.com", api=True)
    r = await password_grant(client, "many@example.com", device_token=first)
    assert r.status_code == 429, r.text  # forgotten
    r = await password_grant(client, "many@example.com", device_token=second)
    assert r.status_code == 200, r.text
