"""LNURL-auth logins and TOTP: a user who enrolled TOTP gives a current code (``totp``) with
the session request, checked and counted like the password grant's; an account that must
have TOTP and has none gets a token family whose only use is enrolling it."""

from __future__ import annotations

import json

import pyotp
from coincurve import PrivateKey
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.audit.models import AuditEvent
from satvault.auth.models import Credentials
from satvault.kernel.clock import FakeClock
from tests.lightning_lnurl.conftest import LnEnv
from tests.lightning_lnurl.test_auth import callback, challenge, login, sign


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signed(ln: LnEnv, wallet_key: PrivateKey) -> dict:
    """A challenge the wallet has signed; the browser has not exchanged it yet."""
    c = await challenge(ln)
    assert await callback(ln, c["k1"], **sign(wallet_key, c["k1"])) == {"status": "OK"}
    return c


async def exchange(ln: LnEnv, c: dict, code: str | None = None):
    body: dict[str, str] = {"session_token": c["session_token"]}
    if code is not None:
        body["totp"] = code
    return await ln.client.post(f"/lnurl-auth/{c['k1']}/session", json=body)


async def enroll(ln: LnEnv, access_token: str, clock: FakeClock) -> tuple[pyotp.TOTP, list[str]]:
    """TOTP turned on through the API, as a user does it; the enrollment's step is spent."""
    r = await ln.client.post("/api/v1/auth/totp", headers=bearer(access_token))
    assert r.status_code == 201, r.text
    code = pyotp.TOTP(r.json()["secret"])
    r = await ln.client.post("/api/v1/auth/totp/confirm", headers=bearer(access_token),
                             json={"code": code.at(clock.now())})
    assert r.status_code == 200, r.text
    clock.advance(seconds=30)
    return code, r.json()["recovery_codes"]


def wrong_code(code: pyotp.TOTP, clock: FakeClock) -> str:
    right = {code.at(clock.now(), counter_offset=o) for o in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in right)


async def failures(ln: LnEnv, user_id: str) -> int:
    async with ln.sessions() as s:
        creds = await s.get(Credentials, user_id)
        assert creds is not None
        return creds.failed_signins


async def audited(ln: LnEnv, action: str) -> list[dict]:
    async with ln.sessions() as s:
        rows = (await s.execute(select(AuditEvent).where(AuditEvent.action == action)
                                .order_by(AuditEvent.id))).scalars()
        return [json.loads(r.state_after or "{}") for r in rows]


async def test_a_user_with_totp_gives_a_code_at_the_login(ln: LnEnv, clock: FakeClock):
    """Found in the Known gaps: the wallet's signature stood for both factors, so a user who
    enrolled TOTP was asked no code at an LNURL-auth login. Now the exchange needs one: no
    code and a wrong code are refused without spending the challenge (the browser asks the
    user and tries again), a wrong one counts against the account like at the password
    grant, the right one gets the token family, and a code is good once."""
    wallet_key = PrivateKey()
    first = await login(ln, wallet_key)
    user_id = first["user_id"]
    code, recovery = await enroll(ln, first["access_token"], clock)

    c = await signed(ln, wallet_key)
    r = await exchange(ln, c)
    assert r.status_code == 401, r.text
    assert r.json()["type"].endswith("/second-factor-required"), r.text
    assert "totp" in r.json()["detail"]
    assert (await exchange(ln, c)).status_code == 401  # still not spent: ask again
    assert await failures(ln, user_id) == 0  # a missing code is no guess

    wrong = await exchange(ln, c, wrong_code(code, clock))
    assert wrong.status_code == 401 and wrong.json()["type"].endswith("/invalid-code")
    assert await failures(ln, user_id) == 1
    assert (await audited(ln, "auth.signin_failed"))[-1]["factor"] == "totp"

    r = await exchange(ln, c, code.at(clock.now()))
    assert r.status_code == 201, r.text
    session = r.json()
    assert session["user_id"] == user_id and session["totp_enrollment_required"] is False
    assert session["scopes"] == ["wallet:read", "wallet:write", "withdrawals:write"]
    assert await failures(ln, user_id) == 0  # the success cleared the count
    assert (await audited(ln, "auth.token_issued"))[-1]["method"] == "lnurl-auth+totp"
    me = await ln.client.get("/api/v1/me", headers=bearer(session["access_token"]))
    assert me.status_code == 200 and "withdrawals:write" in me.json()["scopes"]
    assert (await exchange(ln, c, code.at(clock.now()))).status_code == 410  # spent now

    # The same code again, at the next login: refused, as the password grant refuses it.
    c2 = await signed(ln, wallet_key)
    replayed = await exchange(ln, c2, code.at(clock.now()))
    assert replayed.status_code == 401 and replayed.json()["type"].endswith("/invalid-code")
    clock.advance(seconds=30)
    assert (await exchange(ln, c2, code.at(clock.now()))).status_code == 201
    # A recovery code stands for the app, once.
    c3 = await signed(ln, wallet_key)
    assert (await exchange(ln, c3, recovery[0])).status_code == 201
    c4 = await signed(ln, wallet_key)
    assert (await exchange(ln, c4, recovery[0])).status_code == 401


async def test_wrong_codes_at_the_login_lock_the_account(ln: LnEnv, clock: FakeClock):
    """The password grant's lockout, not a second one: five wrong codes lock the account,
    and while it is locked even the right code is not looked at (429 with Retry-After). The
    challenge outlives the lock and works once it has passed."""
    wallet_key = PrivateKey()
    first = await login(ln, wallet_key)
    code, _ = await enroll(ln, first["access_token"], clock)
    c = await signed(ln, wallet_key)
    for _ in range(5):
        r = await exchange(ln, c, wrong_code(code, clock))
        assert r.status_code == 401 and r.json()["type"].endswith("/invalid-code")
    locked = await exchange(ln, c, code.at(clock.now()))
    assert locked.status_code == 429 and locked.json()["type"].endswith("/account-locked")
    assert 55 <= int(locked.headers["Retry-After"]) <= 60
    assert [a["seconds"] for a in await audited(ln, "auth.locked")] == [60]
    clock.advance(seconds=61)
    r = await exchange(ln, c, code.at(clock.now()))
    assert r.status_code == 201, r.text


async def test_an_account_that_must_have_totp_logs_in_only_to_enroll(ln: LnEnv,
                                                                     clock: FakeClock):
    """Found in the Known gaps: an account an admin marked as needing TOTP, and without it,
    could not log in with its wallet at all (and has no password for the dashboard). Like a
    password sign-in to the dashboard, the login now opens only the enrollment: a token
    family with no scope, not refreshable, whose user can turn TOTP on and then log in with
    the wallet and a code."""
    wallet_key = PrivateKey()
    user_id = (await login(ln, wallet_key))["user_id"]
    async with ln.sessions() as s, s.begin():
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
        _, admin_key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
    r = await ln.client.put(f"/api/v1/auth/totp-required/{user_id}",
                            json={"required": True}, headers=bearer(admin_key))
    assert r.status_code == 200, r.text

    r = await exchange(ln, await signed(ln, wallet_key))
    assert r.status_code == 201, r.text
    limited = r.json()
    assert limited["user_id"] == user_id and limited["totp_enrollment_required"] is True
    assert limited["scopes"] == [] and limited["scope"] == ""
    token = bearer(limited["access_token"])
    assert (await audited(ln, "auth.token_issued"))[-1]["method"] == "lnurl-auth:enroll-totp"
    me = await ln.client.get("/api/v1/me", headers=token)
    assert me.status_code == 200 and me.json()["scopes"] == []
    denied = await ln.client.get(f"/api/v1/wallets/{me.json()['wallets'][0]}", headers=token)
    assert denied.status_code == 403, denied.text
    refreshed = await ln.client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": limited["refresh_token"]})
    assert refreshed.status_code == 401 and "enroll" in refreshed.json()["detail"]
    assert (await ln.client.get("/api/v1/auth/totp", headers=token)).json() == {
        "totp_enabled": False, "totp_required": True}

    code, _ = await enroll(ln, limited["access_token"], clock)
    c = await signed(ln, wallet_key)
    assert (await exchange(ln, c)).status_code == 401  # the code is needed from now on
    r = await exchange(ln, c, code.at(clock.now()))
    assert r.status_code == 201 and r.json()["totp_enrollment_required"] is False
    assert "withdrawals:write" in r.json()["scopes"]
