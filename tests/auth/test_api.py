"""Sign-in through the HTTP API, with a real SMTP server: sign-up, the mailed verification,
password reset, JWT access tokens (issue, use, expiry on the moved clock, refresh rotation
and reuse detection, key rotation), TOTP at the token endpoint, lockout and audit."""

from __future__ import annotations

import asyncio
import json
import threading

import pyotp
import pytest
from sqlalchemy import select, update

from satvault.accounts import security
from satvault.accounts import service as acc
from satvault.accounts.models import User, UserStatus
from satvault.audit.models import AuditEvent
from satvault.auth import stepup, tokens, totp
from satvault.auth.models import Credentials, TokenFamily
from satvault.kernel.errors import Unauthenticated
from tests.auth.conftest import Mailbox, client_for

PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signed_up(client, mailbox: Mailbox, email: str = "carol@example.com") -> str:
    r = await client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert r.status_code == 202, r.text
    token = mailbox.last_link(email, "/verify")
    r = await client.post("/api/v1/auth/verify", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    return r.json()["user_id"]


async def password_grant(client, email: str, password: str = PASSWORD, **extra):
    return await client.post("/api/v1/auth/token", json={
        "grant_type": "password", "email": email, "password": password, **extra})


async def actions(sessions, action: str) -> list[AuditEvent]:
    async with sessions() as s:
        return list((await s.execute(select(AuditEvent).where(AuditEvent.action == action)
                                     .order_by(AuditEvent.id))).scalars())


async def test_sign_up_read_the_mail_verify_and_sign_in(client, mailbox, sessions):
    email = "carol@example.com"
    r = await client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert r.status_code == 202
    [mail] = mailbox.to(email)
    assert mail["From"] == "satvault@example.com"
    assert "http://sv.test/verify?token=" in mail.get_payload(decode=True).decode()
    # Not verified yet: the right password is refused as a wrong one is (saying both).
    r = await password_grant(client, email)
    assert r.status_code == 401 and "not confirmed yet" in r.json()["detail"]
    token = mailbox.last_link(email, "/verify")
    r = await client.post("/api/v1/auth/verify", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["status"] == "active"
    # Single use.
    again = await client.post("/api/v1/auth/verify", json={"token": token, "password": PASSWORD})
    assert again.status_code == 422
    r = await password_grant(client, email)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert "admin" not in body["scope"].split()
    me = await client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["owner_type"] == "user" and len(me.json()["wallets"]) == 1
    # Audited, with no secret in the row.
    [signin] = await actions(sessions, "auth.signin")
    assert signin.object == me.json()["owner_id"]
    for row in await actions(sessions, "auth.signup") + [signin]:
        assert PASSWORD not in row.state_after and token not in row.state_after


async def test_sign_up_does_not_tell_whether_an_address_is_taken(client, mailbox):
    await signed_up(client, mailbox, "dave@example.com")
    r = await client.post("/api/v1/auth/signup",
                          json={"email": "dave@example.com", "password": "another password"})
    assert r.status_code == 202
    latest = mailbox.to("dave@example.com")[-1]
    assert "already has a satvault account" in latest.get_payload(decode=True).decode()
    # The old password still works; the second sign-up changed nothing.
    assert (await password_grant(client, "dave@example.com")).status_code == 200


async def test_password_reset_same_answer_single_use_and_signs_out_everywhere(
        client, mailbox, sessions):
    email = "erin@example.com"
    await signed_up(client, mailbox, email)
    issued = (await password_grant(client, email)).json()
    unknown = await client.post("/api/v1/auth/password-reset",
                                json={"email": "nobody@example.com"})
    known = await client.post("/api/v1/auth/password-reset", json={"email": email})
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()
    assert mailbox.to("nobody@example.com") == []
    token = mailbox.last_link(email, "/password-reset/confirm")
    r = await client.post("/api/v1/auth/password-reset/confirm",
                          json={"token": token, "password": "a brand new secret"})
    assert r.status_code == 200, r.text
    again = await client.post("/api/v1/auth/password-reset/confirm",
                              json={"token": token, "password": "yet another secret"})
    assert again.status_code == 422
    assert (await password_grant(client, email)).status_code == 401
    assert (await password_grant(client, email, "a brand new secret")).status_code == 200
    # Tokens issued before the reset are dead: access and refresh.
    r = await client.get("/api/v1/me", headers=bearer(issued["access_token"]))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    r = await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})
    assert r.status_code == 401
    assert await actions(sessions, "auth.password_reset")


async def test_access_token_expires_on_the_clock_and_refresh_rotates(client, mailbox, clock,
                                                                     sessions):
    email = "frank@example.com"
    await signed_up(client, mailbox, email)
    first = (await password_grant(client, email)).json()
    assert (await client.get("/api/v1/me", headers=bearer(first["access_token"]))
            ).status_code == 200
    clock.advance(minutes=11)
    r = await client.get("/api/v1/me", headers=bearer(first["access_token"]))
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert r.headers["WWW-Authenticate"] == "Bearer"
    second = (await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"]})).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/api/v1/me", headers=bearer(second["access_token"]))
            ).status_code == 200
    # The spent refresh token again: someone copied it. The whole family is revoked.
    r = await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert r.status_code == 401 and "used already" in r.json()["detail"]
    r = await client.get("/api/v1/me", headers=bearer(second["access_token"]))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    r = await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    assert r.status_code == 401
    [revoked] = await actions(sessions, "auth.token_family_revoked")
    assert json.loads(revoked.state_after)["reason"] == "refresh-token-reuse"


async def test_key_rotation_old_kid_verifies_until_its_tokens_expire(client, mailbox, clock,
                                                                     sessions):
    import jwt

    email = "gina@example.com"
    await signed_up(client, mailbox, email)
    old = (await password_grant(client, email)).json()["access_token"]
    async with sessions() as s, s.begin():
        new_key = await tokens.rotate_keys(s, actor="test")
    assert jwt.get_unverified_header(old)["kid"] != new_key.kid
    new = (await password_grant(client, email)).json()["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_key.kid
    for token in (old, new):
        assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200
    # Past the old key's last token: the next rotation deletes it; a token naming it (even
    # a forged, unexpired one) is refused.
    clock.advance(minutes=11)
    async with sessions() as s, s.begin():
        await tokens.rotate_keys(s, actor="test")
        old_kid = jwt.get_unverified_header(old)["kid"]
        from satvault.auth.models import SigningKey

        assert await s.get(SigningKey, old_kid) is None
    forged = jwt.encode({"sub": "usr_x", "fam": "tfa_x", "iat": 1, "exp": 2**40,
                         "iss": "satvault"}, b"k" * 32, algorithm="HS256",
                        headers={"kid": old_kid})
    r = await client.get("/api/v1/me", headers=bearer(forged))
    assert r.status_code == 401 and "signing key" in r.json()["detail"]


async def test_scopes_are_narrowed_and_merchants_only_for_their_owner(client, mailbox,
                                                                      sessions):
    email = "hank@example.com"
    user_id = await signed_up(client, mailbox, email)
    async with sessions() as s, s.begin():
        merchant = await acc.create_merchant(s, name="Hank's", owner_user_id=user_id)
        other = await acc.create_merchant(s, name="Other")
    r = await password_grant(client, email, scopes=["wallet:read", "admin"])
    assert r.status_code == 200 and r.json()["scope"] == "wallet:read"
    assert (await password_grant(client, email, scopes=["bogus"])).status_code == 422
    r = await password_grant(client, email, merchant_id=merchant.id, scopes=["stores:write"])
    me = (await client.get("/api/v1/me", headers=bearer(r.json()["access_token"]))).json()
    assert me["owner_type"] == "merchant" and me["owner_id"] == merchant.id
    assert me["scopes"] == ["stores:write"]
    r = await client.post("/api/v1/stores", json={"name": "Shop"},
                          headers=bearer(r.json()["access_token"]) | {"Idempotency-Key": "k1"})
    assert r.status_code == 201, r.text
    assert (await password_grant(client, email, merchant_id=other.id)).status_code == 404
    # The merchant changes hands: the token no longer acts for it.
    acting = (await password_grant(client, email, merchant_id=merchant.id)).json()
    async with sessions() as s, s.begin():
        from satvault.accounts.models import Merchant

        (await s.get(Merchant, merchant.id)).owner_user_id = None
    r = await client.get("/api/v1/me", headers=bearer(acting["access_token"]))
    assert r.status_code == 401 and "no longer acts" in r.json()["detail"]


async def test_the_password_grant_gives_money_scopes_only_with_a_second_factor(
        client, mailbox, clock, sessions):
    """Found from outside: the password grant issued ``withdrawals:write`` from the sign-in
    password alone, so a phished password moved money through the API although the dashboard
    asks a step-up for the same withdrawal. Money scopes now come only when the request proves
    a second factor too: the payment password, or the TOTP code of an account that has TOTP.
    A refresh keeps them (the factor was proved when the family was issued)."""
    email = "nora@example.com"
    user_id = await signed_up(client, mailbox, email)
    r = await password_grant(client, email)
    assert r.status_code == 200 and "withdrawals:write" not in r.json()["scope"].split()
    r = await password_grant(client, email, scopes=["wallet:read", "withdrawals:write"])
    assert r.status_code == 403 and r.json()["type"].endswith("/step-up-required"), r.text
    r = await password_grant(client, email, payment_password="pay me carefully")
    assert r.status_code == 422 and "no payment password" in r.json()["detail"], r.text
    async with sessions() as s, s.begin():
        await stepup.set_payment_password(s, user_id=user_id, password=PASSWORD,
                                          payment_password="pay me carefully")
    r = await password_grant(client, email, payment_password="not the one!")
    assert r.status_code == 401 and r.json()["type"].endswith("/invalid-code"), r.text
    async with sessions() as s:
        assert (await s.get(Credentials, user_id)).failed_stepups == 1  # counted
    r = await password_grant(client, email, payment_password="pay me carefully")
    assert r.status_code == 200 and "withdrawals:write" in r.json()["scope"].split(), r.text
    again = await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": r.json()["refresh_token"]})
    assert "withdrawals:write" in again.json()["scope"].split(), again.text
    # Found from outside: a refresh kept them for the family's whole life (30 days of a
    # stolen refresh token). They hold 15 minutes from the step-up: past that the live access
    # token acts without them and the next refresh does not carry them.
    clock.advance(seconds=14 * 60)
    mid = await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": again.json()["refresh_token"]})
    assert "withdrawals:write" in mid.json()["scope"].split(), mid.text
    me = (await client.get("/api/v1/me", headers=bearer(mid.json()["access_token"]))).json()
    assert "withdrawals:write" in me["scopes"], me
    clock.advance(seconds=61)
    me = (await client.get("/api/v1/me", headers=bearer(mid.json()["access_token"]))).json()
    assert "withdrawals:write" not in me["scopes"] and "wallet:read" in me["scopes"], me
    later = await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": mid.json()["refresh_token"]})
    assert later.status_code == 200, later.text
    assert "withdrawals:write" not in later.json()["scope"].split(), later.text
    assert "wallet:read" in later.json()["scope"].split()
    clock.advance(seconds=3600)  # nor does it come back later
    last = await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": later.json()["refresh_token"]})
    assert "withdrawals:write" not in last.json()["scope"].split(), last.text
    # With TOTP on, the code the grant needs anyway is the second factor.
    async with sessions() as s, s.begin():
        enrollment = await totp.begin_enrollment(s, user_id=user_id)
        code = pyotp.TOTP(enrollment.secret)
        await totp.confirm_enrollment(s, user_id=user_id, code=code.at(clock.now()))
    clock.advance(seconds=30)
    r = await password_grant(client, email, totp_code=code.at(clock.now()))
    assert r.status_code == 200 and "withdrawals:write" in r.json()["scope"].split(), r.text
    [issued, *_] = reversed(await actions(sessions, "auth.token_issued"))
    assert json.loads(issued.state_after)["method"] == "password+totp"


async def test_suspended_user_token_refused(client, mailbox, sessions):
    email = "ivy@example.com"
    user_id = await signed_up(client, mailbox, email)
    access = (await password_grant(client, email)).json()["access_token"]
    async with sessions() as s, s.begin():
        (await s.get(User, user_id)).status = UserStatus.SUSPENDED
    r = await client.get("/api/v1/me", headers=bearer(access))
    assert r.status_code == 401 and "not active" in r.json()["detail"]


async def test_totp_at_the_token_endpoint_replay_and_recovery_codes(client, mailbox, clock,
                                                                    sessions):
    email = "jack@example.com"
    user_id = await signed_up(client, mailbox, email)
    async with sessions() as s, s.begin():
        enrollment = await totp.begin_enrollment(s, user_id=user_id)
    assert enrollment.uri.startswith("otpauth://totp/satvault:")
    assert enrollment.qr_svg.startswith("<svg")
    # it scales with the box the page gives it (a fixed width/height got clipped by the CSS)
    opening = enrollment.qr_svg.split(">", 1)[0]
    assert "viewBox=" in opening and "width=" not in opening and "height=" not in opening
    code = pyotp.TOTP(enrollment.secret)
    async with sessions() as s, s.begin():
        recovery = await totp.confirm_enrollment(s, user_id=user_id, code=code.at(clock.now()))
    assert len(set(recovery)) == 10
    # The enrollment code's step is spent: the same code cannot sign in.
    r = await password_grant(client, email, totp_code=code.at(clock.now()))
    assert r.status_code == 401
    assert (await password_grant(client, email)).status_code == 401  # no code at all
    clock.advance(seconds=30)
    now_code = code.at(clock.now())
    assert (await password_grant(client, email, totp_code=now_code)).status_code == 200
    r = await password_grant(client, email, totp_code=now_code)  # replayed
    assert r.status_code == 401 and r.json()["type"].endswith("/invalid-code")
    # A recovery code works once.
    assert (await password_grant(client, email, totp_code=recovery[0])).status_code == 200
    assert (await password_grant(client, email, totp_code=recovery[0])).status_code == 401
    # Typed with a space for its hyphen, or none (found from outside: refused, counted).
    assert (await password_grant(client, email, totp_code=recovery[1].replace("-", " "))
            ).status_code == 200
    assert (await password_grant(client, email, totp_code=recovery[2].replace("-", ""))
            ).status_code == 200
    async with sessions() as s:
        secret = (await s.get(Credentials, user_id)).totp_secret
    audited = json.dumps([a.state_after for a in await actions(sessions, "auth.totp_enabled")])
    assert secret and secret not in audited
    assert await actions(sessions, "auth.recovery_code_used")


async def test_progressive_lockout_per_account_and_audit(client, mailbox, clock, sessions):
    email = "kim@example.com"
    await signed_up(client, mailbox, email)
    for _ in range(5):
        r = await password_grant(client, email, "wrong password!")
        assert r.status_code == 401
    # Locked now: even the right password is not checked.
    r = await password_grant(client, email)
    assert r.status_code == 429 and r.json()["type"].endswith("/account-locked")
    assert 55 <= int(r.headers["Retry-After"]) <= 60
    clock.advance(seconds=61)
    # One more failure after the lock: twice as long.
    r = await password_grant(client, email, "wrong password!")
    assert r.status_code == 401
    r = await password_grant(client, email)
    assert r.status_code == 429 and 115 <= int(r.headers["Retry-After"]) <= 120
    clock.advance(seconds=121)
    assert (await password_grant(client, email)).status_code == 200
    assert len(await actions(sessions, "auth.signin_failed")) == 6
    locks = await actions(sessions, "auth.locked")
    assert [json.loads(x.state_after)["seconds"] for x in locks] == [60, 120]
    # The success cleared the count.
    r = await password_grant(client, email, "wrong password!")
    assert r.status_code == 401
    assert (await password_grant(client, email)).status_code == 200


@pytest.mark.parametrize("storage", ["memory", "redis"])
async def test_failed_sign_ins_are_limited_per_address(engine, db_url, smtp, sessions,
                                                       storage):
    """In process memory, and in the real Redis every process shares."""
    import os
    import secrets

    _, port = smtp
    url = os.environ.get("SATVAULT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    async with client_for(engine, db_url, port,
                          rate_limit_storage="memory" if storage == "memory" else url,
                          rate_limit_key_prefix=f"sv-auth-{secrets.token_hex(6)}",
                          rate_limit_auth_failures_per_address="3/minute") as client:
        for i in range(3):
            r = await password_grant(client, f"nobody{i}@example.com", "whatever1")
            assert r.status_code == 401
        r = await password_grant(client, "nobody9@example.com", "whatever1")
        assert r.status_code == 429 and r.json()["type"].endswith("/rate-limited")
    # Unknown addresses are audited as failures too (no password in the row).
    failed = await actions(sessions, "auth.signin_failed")
    assert len(failed) == 3 and all("whatever1" not in f.state_after for f in failed)


async def test_admin_without_totp_cannot_get_a_token_and_admin_requires_totp_of_merchant(
        client, mailbox, sessions):
    async with sessions() as s, s.begin():
        admin = await acc.create_user(s, email="root@example.com", password=PASSWORD,
                                      is_admin=True)
        _, admin_key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
    r = await password_grant(client, "root@example.com")
    assert r.status_code == 401 and "enroll TOTP" in r.json()["detail"]
    user_id = await signed_up(client, mailbox, "lou@example.com")
    async with sessions() as s, s.begin():
        merchant = await acc.create_merchant(s, name="Lou's", owner_user_id=user_id)
    assert (await password_grant(client, "lou@example.com")).status_code == 200
    r = await client.put(f"/api/v1/auth/totp-required/{merchant.id}", json={"required": True},
                         headers=bearer(admin_key))
    assert r.status_code == 200, r.text
    assert r.json() == {"user_id": user_id, "totp_required": True, "totp_enabled": False}
    r = await password_grant(client, "lou@example.com")
    assert r.status_code == 401 and "enroll TOTP" in r.json()["detail"]
    # Only an admin may set it.
    lou = (await client.post("/api/v1/auth/token", json={
        "grant_type": "password", "email": "root@example.com", "password": PASSWORD}))
    assert lou.status_code == 401
    async with sessions() as s, s.begin():
        _, lou_key = await acc.create_api_key(s, owner_id=user_id, scopes=["wallet:read"])
    r = await client.put(f"/api/v1/auth/totp-required/{user_id}", json={"required": False},
                         headers=bearer(lou_key))
    assert r.status_code == 403
    assert await actions(sessions, "auth.totp_required")


def _token_naming_kid(kid_json: str) -> str:
    """An access token whose header names ``kid_json`` (JSON text, so it may hold escapes no
    encoder would write); its claims and signature do not matter: it is refused before."""
    import base64

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = b64(('{"alg":"HS256","typ":"JWT","kid":' + kid_json + "}").encode())
    return f"{header}.{b64(b'{}')}.{b64(b'sig')}"


async def test_a_kid_not_shaped_like_ours_is_a_counted_401(engine, db_url, smtp):
    """The guard sees only the raw Authorization header; a JWT's header is base64 of JSON, so
    its ``kid`` may decode to a NUL or a lone surrogate, which was looked up as a primary key:
    a 500 on PostgreSQL (and for a surrogate on SQLite), never counted as a failed sign-in. A
    kid must have the shape satvault gives its keys (``kid_`` and 16 id characters) before
    any lookup; anything else is a malformed token, a 401 the failure limit counts."""
    kids = [r'"\u0000"', r'"\ud800"', r'"kid_\u0000aaaaaaaaaaaaaaa"', r'"kid_AAAAAAAAAAAAAAAA"',
            '"kid_0123456789abcdefg"', "7"]
    async with client_for(engine, db_url, smtp[1],
                          rate_limit_auth_failures_per_address=f"{len(kids)}/minute") as c:
        for kid in kids:
            r = await c.get("/api/v1/me", headers=bearer(_token_naming_kid(kid)))
            assert r.status_code == 401, (kid, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["detail"] == "malformed access token", kid
        limited = await c.get("/api/v1/me", headers=bearer(_token_naming_kid('"x"')))
        assert limited.status_code == 429  # every one of them counted


@pytest.mark.parametrize("refresh_token", ["svr.rtk_\x00.secret", "svr.rtk_\ud800.secret",
                                           "svr.rtk_short.secret"])
async def test_a_refresh_token_not_shaped_like_ours_is_unknown(sessions, refresh_token):
    """Below the edge guard (which checks the JSON body it comes in) too: the id inside a
    refresh token must have the shape satvault gives it before it is looked up."""
    async with sessions() as s, s.begin():
        assert await tokens.family_of(s, refresh_token) is None
        with pytest.raises(Unauthenticated, match="unknown refresh token"):
            await tokens.refresh(s, refresh_token=refresh_token)


@pytest.mark.parametrize("body", [
    {"grant_type": "refresh_token", "refresh_token": "svr.rtk_nope.nope"},
    {"grant_type": "refresh_token"},
    {"grant_type": "password", "email": "x@example.com"},
    {"grant_type": "session"},
])
async def test_bad_grants_are_401_problems(client, body):
    r = await client.post("/api/v1/auth/token", json=body)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"


async def test_mail_goes_to_the_log_in_development_and_fails_in_production_without_relay(
        engine, db_url, sessions):
    import httpx

    from satvault.auth.errors import MailUnavailable
    from satvault.auth.mail import Mail, Mailer
    from satvault.config import Settings
    from satvault.web.app import create_app

    app = create_app(Settings(database_url=db_url, lightning_backend="none"), engine=engine,
                     start_workers=False)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://t") as c):
        r = await c.post("/api/v1/auth/signup",
                         json={"email": "dev@example.com", "password": PASSWORD})
        assert r.status_code == 202
    async with sessions() as s:
        pending = (await s.execute(select(User).where(User.email == "dev@example.com"))
                   ).scalar_one()
        assert pending.status == UserStatus.PENDING
    with pytest.raises(MailUnavailable):
        await Mailer(host="", development=False).send(Mail("a@example.com", "s", "b"))
    with pytest.raises(MailUnavailable):  # a relay that is not there
        await Mailer(host="127.0.0.1", port=9, timeout=2).send(Mail("a@example.com", "s", "b"))


async def test_totp_through_the_api_enroll_confirm_sign_in_and_disable(client, mailbox, clock,
                                                                       sessions):
    """A user's own TOTP over the API, with a user's access token (never an API key): start,
    a wrong code refused (and counted towards the lockout), confirm, sign in with a code,
    turn off with a recovery code; an admin's requirement keeps it on."""
    email = "lena@example.com"
    user_id = await signed_up(client, mailbox, email)
    r = await password_grant(client, email)
    assert r.status_code == 200, r.text
    me = bearer(r.json()["access_token"])
    refresh = (await password_grant(client, email)).json()["refresh_token"]  # another family
    async with sessions() as s, s.begin():
        _, api_key = await acc.create_api_key(s, owner_id=user_id,
                                              scopes=["wallet:read", "wallet:write"])
    for method, path in (("GET", "/api/v1/auth/totp"), ("POST", "/api/v1/auth/totp")):
        r = await client.request(method, path, headers=bearer(api_key))
        assert r.status_code == 403 and "access token" in r.json()["detail"], r.text
    assert (await client.get("/api/v1/auth/totp")).status_code == 401
    r = await client.get("/api/v1/auth/totp", headers=me)
    assert r.json() == {"totp_enabled": False, "totp_required": False}

    r = await client.post("/api/v1/auth/totp", headers=me)
    assert r.status_code == 201, r.text
    started = r.json()
    assert started["otpauth_uri"].startswith("otpauth://totp/satvault:")
    assert started["qr_svg"].startswith("<svg") and started["secret"]
    code = pyotp.TOTP(started["secret"])
    r = await client.post("/api/v1/auth/totp/confirm", headers=me, json={"code": "000000"
                          if code.at(clock.now()) != "000000" else "111111"})
    assert r.status_code == 401 and r.json()["type"].endswith("/invalid-code")
    async with sessions() as s:
        creds = await s.get(Credentials, user_id)
        assert creds.failed_stepups == 1 and creds.totp_confirmed_at is None  # counted, not on
    r = await client.post("/api/v1/auth/totp/confirm", headers=me,
                          json={"code": code.at(clock.now())})
    assert r.status_code == 200, r.text
    recovery = r.json()["recovery_codes"]
    assert len(set(recovery)) == 10
    # The family issued on the password alone ended with it (found from outside: it went on
    # refreshing for good), the one that enrolled too.
    assert (await client.get("/api/v1/auth/totp", headers=me)).status_code == 401
    assert (await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": refresh})).status_code == 401
    assert (await password_grant(client, email)).status_code == 401  # a code is needed now
    clock.advance(seconds=30)
    r = await password_grant(client, email, totp_code=code.at(clock.now()))
    assert r.status_code == 200, r.text
    me = bearer(r.json()["access_token"])
    r = await client.get("/api/v1/auth/totp", headers=me)
    assert r.json() == {"totp_enabled": True, "totp_required": False}
    assert (await client.post("/api/v1/auth/totp", headers=me)).status_code == 422  # it is on

    async with sessions() as s, s.begin():  # an administrator requires it
        await totp.set_required(s, owner_id=user_id, required=True, actor="usr_admin")
    r = await client.post("/api/v1/auth/totp/disable", headers=me, json={"code": recovery[0]})
    assert r.status_code == 403, r.text
    async with sessions() as s, s.begin():
        await totp.set_required(s, owner_id=user_id, required=False, actor="usr_admin")
    r = await client.post("/api/v1/auth/totp/disable", headers=me, json={"code": "12345678"})
    assert r.status_code == 401
    r = await client.post("/api/v1/auth/totp/disable", headers=me, json={"code": recovery[0]})
    assert r.status_code == 200 and r.json()["totp_enabled"] is False, r.text
    assert (await password_grant(client, email)).status_code == 200  # a password is enough
    assert await actions(sessions, "auth.totp_enabled")
    assert await actions(sessions, "auth.totp_disabled")


async def test_wrong_totp_codes_over_the_api_lock_the_account(client, mailbox, clock, sessions):
    email = "mona@example.com"
    await signed_up(client, mailbox, email)
    me = bearer((await password_grant(client, email)).json()["access_token"])
    secret = (await client.post("/api/v1/auth/totp", headers=me)).json()["secret"]
    right = pyotp.TOTP(secret).at(clock.now())
    wrong = "000000" if right != "000000" else "111111"
    for _ in range(5):
        r = await client.post("/api/v1/auth/totp/confirm", headers=me, json={"code": wrong})
        assert r.status_code == 401
    r = await client.post("/api/v1/auth/totp/confirm", headers=me, json={"code": right})
    assert r.status_code == 429 and r.json()["type"].endswith("/account-locked")
    assert (await client.get("/api/v1/auth/totp", headers=me)).json()["totp_enabled"] is False
    clock.advance(seconds=61)
    right = pyotp.TOTP(secret).at(clock.now())
    r = await client.post("/api/v1/auth/totp/confirm", headers=me, json={"code": right})
    assert r.status_code == 200, r.text


async def test_an_admins_token_moves_money_only_within_its_step_up(client, sessions, clock):
    """Found from outside: an admin's access token issued without the money scope (outside
    the step-up's window, or from a refresh) still withdrew from any customer's wallet,
    because ``admin`` stood for every scope. For an access token it stands for every scope
    but the money ones, which the token names when its grant proved a step-up."""
    async with sessions() as s, s.begin():
        root = await acc.create_user(s, email="root2@example.com", password=PASSWORD,
                                     is_admin=True)
        enrollment = await totp.begin_enrollment(s, user_id=root.id)
        code = pyotp.TOTP(enrollment.secret)
        await totp.confirm_enrollment(s, user_id=root.id, code=code.at(clock.now()))
        victim = await acc.create_user(s, email="victim@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=victim.id)
    clock.advance(seconds=30)
    stepped = await password_grant(client, "root2@example.com", totp_code=code.at(clock.now()))
    assert stepped.status_code == 200 and "withdrawals:write" in stepped.json()["scope"]
    # Releasing held money (approving a withdrawal, deciding a risk case) takes the money
    # scope too: within the window the request reaches the service (an unknown case: 404; an
    # admin who approves for no group: refused as no approver, before any lookup).
    releases = [("/api/v1/admin/withdrawals/wd_nosuchthing0000000000/approve", {},
                 "not-an-approver"),
                ("/api/v1/admin/risk/cases/rc_nosuchthing0000000000/close",
                 {"resolution": "false_positive", "money": "release"}, "not-found")]
    for path, body, kind in releases:
        r = await client.post(path, json=body, headers=bearer(stepped.json()["access_token"]))
        assert r.json()["type"].endswith(f"/{kind}"), (path, r.text)
    clock.advance(seconds=3600)  # past the money window
    later = await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": stepped.json()["refresh_token"]})
    assert later.status_code == 200 and "withdrawals:write" not in later.json()["scope"]
    assert "admin" in later.json()["scope"].split()
    r = await client.post(f"/api/v1/wallets/{wallet.id}/withdrawals",
                          headers={**bearer(later.json()["access_token"]),
                                   "Idempotency-Key": "not-mine"},
                          json={"destination": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
                                "amount_msat": 10_000_000})
    assert r.status_code == 403 and "withdrawals:write" in r.text, r.text
    # Found from outside: such a token still approved withdrawals (``admin`` was enough).
    for path, body, _kind in releases:
        r = await client.post(path, json=body, headers=bearer(later.json()["access_token"]))
        assert r.status_code == 403 and "step-up" in r.text, (path, r.text)
    # Admin reads still work with it.
    r = await client.get(f"/api/v1/wallets/{wallet.id}",
                         headers=bearer(later.json()["access_token"]))
    assert r.status_code == 200, r.text


class _Watched:
    """The argon2 hasher, noting on which thread each computation runs and how many run at
    once."""

    def __init__(self, inner) -> None:
        self.inner, self.threads, self.running, self.most = inner, set(), 0, 0
        self.calls = 0
        self.lock = threading.Lock()

    def _run(self, fn, *args):
        with self.lock:
            self.threads.add(threading.get_ident())
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return fn(*args)
        finally:
            with self.lock:
                self.running -= 1

    def hash(self, password):
        return self._run(self.inner.hash, password)

    def verify(self, stored, password):
        return self._run(self.inner.verify, stored, password)


async def test_password_checks_run_off_the_event_loop_a_few_at_a_time(client, mailbox,
                                                                      monkeypatch):
    """Found from outside: eight concurrent wrong sign-ins ran argon2 on the event loop and
    /healthz took seconds to answer. The checks run on a small pool of their own now, at
    most ``ARGON2_THREADS`` at once, and the loop stays free to answer other requests."""
    email = "flood@example.com"
    await signed_up(client, mailbox, email)
    watched = _Watched(security._hasher)
    monkeypatch.setattr(security, "_hasher", watched)
    loop_thread = threading.get_ident()

    async def wrong(i: int):
        who = email if i % 2 else f"nobody{i}@example.com"
        return await password_grant(client, who, f"wrong password {i}")

    answers = await asyncio.gather(*(wrong(i) for i in range(8)),
                                   client.get("/healthz"))
    assert all(r.status_code == 401 for r in answers[:-1])
    assert answers[-1].status_code == 200
    # Every argon2 computation ran on the pool, none on the loop's thread (a deterministic
    # stand-in for "the loop stays responsive": timing it is at the mercy of a busy CI).
    assert watched.threads and loop_thread not in watched.threads
    assert watched.most <= security.ARGON2_THREADS


async def test_sign_up_of_a_taken_address_costs_the_argon2_work_of_a_new_one(
        client, mailbox, monkeypatch):
    """Found from outside: a taken, active address answered sign-up in 44 ms (no argon2), a
    new one in 1.3 s, which told which addresses have accounts."""
    await signed_up(client, mailbox, "taken@example.com")
    watched = _Watched(security._hasher)
    monkeypatch.setattr(security, "_hasher", watched)
    costs = []
    for email in ("taken@example.com", "fresh@example.com"):
        before = watched.calls
        r = await client.post("/api/v1/auth/signup",
                              json={"email": email, "password": "some password"})
        assert r.status_code == 202, r.text
        costs.append(watched.calls - before)
    assert costs[0] == costs[1] >= 1


async def test_password_reset_answers_the_same_when_the_mail_cannot_be_sent(
        engine, db_url, smtp, mailbox):
    """Found from outside: with the relay failing, a reset for a known address answered 503
    mail-unavailable and one for an unknown address 202."""
    async with client_for(engine, db_url, smtp[1]) as c:
        await signed_up(c, mailbox, "known@example.com")
    async with client_for(engine, db_url, 9) as c:  # nothing listens on port 9
        known = await c.post("/api/v1/auth/password-reset",
                             json={"email": "known@example.com"})
        unknown = await c.post("/api/v1/auth/password-reset",
                               json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202, known.text
    assert known.json() == unknown.json()


async def test_a_reset_cannot_make_the_sign_in_password_the_payment_password(
        client, mailbox, sessions):
    """Found from outside: the reset set a sign-in password equal to the payment password
    (the security page refuses it), which made the money step-up a copy of the sign-in
    password. Refused with the page's message, counted as a guess at the payment password,
    and the link is spent (each guess costs a mail)."""
    email = "pam@example.com"
    user_id = await signed_up(client, mailbox, email)
    async with sessions() as s, s.begin():
        await stepup.set_payment_password(s, user_id=user_id, password=PASSWORD,
                                          payment_password="pay me carefully")
    await client.post("/api/v1/auth/password-reset", json={"email": email})
    token = mailbox.last_link(email, "/password-reset/confirm")
    r = await client.post("/api/v1/auth/password-reset/confirm",
                          json={"token": token, "password": "pay me carefully"})
    assert r.status_code == 422, r.text
    assert "must differ from the payment password" in r.json()["detail"]
    assert (await password_grant(client, email, "pay me carefully")).status_code == 401
    assert (await password_grant(client, email)).status_code == 200
    [counted] = [a for a in await actions(sessions, "auth.signin_failed")
                 if json.loads(a.state_after)["factor"] == "payment-password-via-password"]
    assert counted.object == user_id
    r = await client.post("/api/v1/auth/password-reset/confirm",
                          json={"token": token, "password": "another new secret"})
    assert r.status_code == 422  # spent
    await client.post("/api/v1/auth/password-reset", json={"email": email})
    token = mailbox.last_link(email, "/password-reset/confirm")
    r = await client.post("/api/v1/auth/password-reset/confirm",
                          json={"token": token, "password": "another new secret"})
    assert r.status_code == 200, r.text


async def test_requiring_totp_ends_the_tokens_issued_before_it(client, mailbox, sessions):
    """Found from outside: after an admin required TOTP of a user, the user's access and
    refresh tokens kept working (refresh for 30 days). They are revoked now, and a refresh
    is refused while the account must enroll, whatever made it so."""
    async with sessions() as s, s.begin():
        admin = await acc.create_user(s, email="boss@example.com", password=PASSWORD,
                                      is_admin=True)
        _, admin_key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
    user_id = await signed_up(client, mailbox, "tom@example.com")
    issued = (await password_grant(client, "tom@example.com")).json()
    other = (await password_grant(client, "tom@example.com")).json()
    r = await client.put(f"/api/v1/auth/totp-required/{user_id}", json={"required": True},
                         headers=bearer(admin_key))
    assert r.status_code == 200, r.text
    r = await client.get("/api/v1/me", headers=bearer(issued["access_token"]))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    r = await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})
    assert r.status_code == 401
    # A family the revocation missed (the requirement written some other way) is not
    # refreshed either.
    async with sessions() as s, s.begin():
        await s.execute(update(TokenFamily).where(TokenFamily.user_id == user_id)
                        .values(revoked_at=None, revoked_reason=None))
    r = await client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": other["refresh_token"]})
    assert r.status_code == 401 and "enroll TOTP" in r.json()["detail"]


async def test_sign_up_refuses_an_address_with_a_direction_override(client, mailbox,
                                                                    sessions):
    """Found from outside: sign-up with "adm\\u202enim@example.com" made a pending user
    (before the mail failed). Refused, nothing stored; a reset for it matches nothing."""
    email = "adm\u202enim@example.com"
    r = await client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert r.status_code == 422 and "not an e-mail address" in r.json()["detail"], r.text
    async with sessions() as s:
        assert (await s.execute(select(User).where(User.email == email))).first() is None
    r = await client.post("/api/v1/auth/password-reset", json={"email": email})
    assert r.status_code == 202
    assert (await password_grant(client, email)).status_code == 401
