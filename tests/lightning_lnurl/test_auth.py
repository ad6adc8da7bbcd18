"""LNURL-auth logins (LUD-04): a wallet signs k1, the browser that asked exchanges the
verified challenge for an API key, once; replays, bad signatures and expiry are refused."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta

from coincurve import PrivateKey
from sqlalchemy import func, select, update

from satvault.accounts.models import ApiKey, User
from satvault.db import utcnow
from satvault.kernel.clock import FakeClock
from satvault.lightning.lnurl import decode_lnurl
from satvault.lightning.lnurl_auth import verify_login_signature
from satvault.lightning.lnurl_models import LnurlAuthChallenge, LnurlAuthKey
from satvault.migrate import upgrade
from tests.lightning_lnurl.conftest import LnEnv

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def sign(key: PrivateKey, k1: str) -> dict[str, str]:
    return {"sig": key.sign(bytes.fromhex(k1), hasher=None).hex(),
            "key": key.public_key.format(compressed=True).hex()}


def high_s(der: bytes) -> bytes:
    """The same signature with s replaced by n - s (valid, but not in low-S form)."""
    rlen = der[3]
    r = int.from_bytes(der[4:4 + rlen], "big")
    s = int.from_bytes(der[6 + rlen:], "big")

    def integer(v: int) -> bytes:
        raw = v.to_bytes(33, "big").lstrip(b"\0")
        raw = b"\0" + raw if raw[0] & 0x80 else raw
        return b"\x02" + bytes([len(raw)]) + raw

    body = integer(r) + integer(N - s)
    return b"\x30" + bytes([len(body)]) + body


async def challenge(ln: LnEnv) -> dict:
    r = await ln.client.get("/lnurl-auth/challenge")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    return r.json()


async def callback(ln: LnEnv, k1: str, **params: str) -> dict:
    r = await ln.client.get("/lnurl-auth/callback", params={"tag": "login", "k1": k1, **params})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    return r.json()


async def take_session(ln: LnEnv, c: dict, token: str | None = None):
    return await ln.client.post(f"/lnurl-auth/{c['k1']}/session",
                                json={"session_token": token or c["session_token"]})


async def test_login_flow_and_session_key(ln: LnEnv):
    wallet_key = PrivateKey()
    c = await challenge(ln)
    assert len(c["k1"]) == 64 and int(c["k1"], 16) >= 0
    url = decode_lnurl(c["lnurl"])
    assert url == f"http://lnurl.test/lnurl-auth/callback?tag=login&k1={c['k1']}&action=login"
    pending = await take_session(ln, c)
    assert pending.status_code == 409 and pending.json()["type"].endswith("login-pending")

    assert await callback(ln, c["k1"], **sign(wallet_key, c["k1"])) == {"status": "OK"}
    r = await take_session(ln, c)
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    session = r.json()
    assert session["scopes"] == ["wallet:read", "wallet:write", "withdrawals:write"]
    me = await ln.client.get("/api/v1/me", headers={"Authorization":
                                                    f"Bearer {session['api_key']}"})
    assert me.status_code == 200, me.text
    assert me.json()["owner_id"] == session["user_id"] and len(me.json()["wallets"]) == 1
    async with ln.sessions() as s:
        user = await s.get(User, session["user_id"])
        bound = await s.get(LnurlAuthKey, wallet_key.public_key.format().hex())
    assert user is not None and user.password_hash is None
    assert user.email.endswith("@lnurl-auth.invalid")
    assert bound is not None and bound.user_id == user.id

    # Replays: the session is handed out once, the signed k1 is accepted once.
    replay = await take_session(ln, c)
    assert replay.status_code == 410 and replay.json()["type"].endswith("login-used")
    again = await callback(ln, c["k1"], **sign(wallet_key, c["k1"]))
    assert again == {"status": "ERROR", "reason": "this k1 was already used"}

    # The same linking key logs in to the same user next time.
    c2 = await challenge(ln)
    assert await callback(ln, c2["k1"], **sign(wallet_key, c2["k1"])) == {"status": "OK"}
    assert (await take_session(ln, c2)).json()["user_id"] == session["user_id"]
    async with ln.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(LnurlAuthKey))
                ).scalar_one() == 1


async def test_bad_signatures_are_refused(ln: LnEnv):
    wallet_key, other = PrivateKey(), PrivateKey()
    c = await challenge(ln)
    good = sign(wallet_key, c["k1"])
    wrong_message = sign(wallet_key, "ab" * 32)
    wrong_key = {"sig": good["sig"], "key": other.public_key.format().hex()}
    for params in (wrong_message, wrong_key, {**good, "sig": "zz"}, {**good, "key": "02" * 33},
                   {**good, "sig": good["sig"][:-2]},
                   {**good, "key": wallet_key.public_key.format(compressed=False).hex()}):
        assert await callback(ln, c["k1"], **params) == {"status": "ERROR",
                                                          "reason": "bad signature"}
    assert (await callback(ln, c["k1"]))["reason"] == "k1, sig and key are required"
    r = await ln.client.get("/lnurl-auth/callback", params={"tag": "withdrawRequest",
                                                            "k1": c["k1"], **good})
    assert r.json()["status"] == "ERROR"
    unknown = "cd" * 32
    assert (await callback(ln, unknown, **sign(wallet_key, unknown)))["reason"] == "unknown k1"
    # None of that consumed the challenge: the right signature still works.
    assert await callback(ln, c["k1"], **good) == {"status": "OK"}


async def test_a_key_or_signature_spelt_with_blanks_is_a_bad_signature(ln: LnEnv):
    """Found from outside: ``bytes.fromhex`` skips blanks, so ``key=03 4f35…`` passed as
    the key it spells, and its text, blank and all, was taken for the account's identity
    (the wallet was told an internal error about a placeholder e-mail). The key, the
    signature and k1 are plain hex or the signature is bad; the key in capitals is the
    same key, the same account; a signature in capitals is the same signature (found from
    outside at stop 41: it was told "bad signature")."""
    wallet_key = PrivateKey()
    c = await challenge(ln)
    good = sign(wallet_key, c["k1"])
    for params in ({**good, "key": f"{good['key'][:2]} {good['key'][2:]}"},
                   {**good, "key": f" {good['key']}"},
                   {**good, "sig": f"{good['sig'][:10]} {good['sig'][10:]}"}):
        assert await callback(ln, c["k1"], **params) == {"status": "ERROR",
                                                          "reason": "bad signature"}, params
    assert await callback(ln, c["k1"], **{**good, "key": good["key"].upper(),
                                          "sig": good["sig"].upper()}) == {"status": "OK"}
    session = await take_session(ln, c)
    assert session.status_code == 201, session.text
    again = await challenge(ln)
    assert await callback(ln, again["k1"], **sign(wallet_key, again["k1"])) == {"status": "OK"}
    second = await take_session(ln, again)
    assert second.json()["user_id"] == session.json()["user_id"]


async def test_session_needs_the_secret_of_the_browser_that_asked(ln: LnEnv):
    c = await challenge(ln)
    await callback(ln, c["k1"], **sign(PrivateKey(), c["k1"]))
    stolen = await take_session(ln, c, token="guessed")
    assert stolen.status_code == 404
    assert (await ln.client.post("/lnurl-auth/" + "ef" * 32 + "/session",
                                 json={"session_token": "x"})).status_code == 404
    assert (await take_session(ln, c)).status_code == 201


async def test_expired_challenges_are_refused(ln: LnEnv):
    wallet_key = PrivateKey()
    c = await challenge(ln)
    async with ln.sessions() as s, s.begin():
        await s.execute(update(LnurlAuthChallenge).where(LnurlAuthChallenge.k1 == c["k1"])
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert (await callback(ln, c["k1"], **sign(wallet_key, c["k1"])))["reason"] == \
        "this login request has expired"
    # Signed in time, but collected too late.
    c2 = await challenge(ln)
    assert await callback(ln, c2["k1"], **sign(wallet_key, c2["k1"])) == {"status": "OK"}
    async with ln.sessions() as s, s.begin():
        await s.execute(update(LnurlAuthChallenge).where(LnurlAuthChallenge.k1 == c2["k1"])
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    late = await take_session(ln, c2)
    assert late.status_code == 410 and late.json()["type"].endswith("login-expired")


async def test_disabled_accounts_cannot_log_in(ln: LnEnv):
    wallet_key = PrivateKey()
    c = await challenge(ln)
    await callback(ln, c["k1"], **sign(wallet_key, c["k1"]))
    user_id = (await take_session(ln, c)).json()["user_id"]
    async with ln.sessions() as s, s.begin():
        await s.execute(update(User).where(User.id == user_id).values(status="suspended"))
    c2 = await challenge(ln)
    assert (await callback(ln, c2["k1"], **sign(wallet_key, c2["k1"])))["reason"] == \
        "this account is disabled"


def test_signature_check_accepts_high_s_and_rejects_junk():
    key = PrivateKey()
    k1 = "11" * 32
    der = key.sign(bytes.fromhex(k1), hasher=None)
    pub = key.public_key.format().hex()
    assert verify_login_signature(k1, der.hex(), pub)
    assert high_s(der) != der and verify_login_signature(k1, high_s(der).hex(), pub)
    assert not verify_login_signature("11" * 31, der.hex(), pub)
    assert not verify_login_signature(k1, "", pub)
    assert not verify_login_signature(k1, der.hex(), "04" + "00" * 64)


async def test_first_logins_racing_with_one_key_make_one_user(ln: LnEnv):
    wallet_key = PrivateKey()
    challenges = [await challenge(ln) for _ in range(3)]
    answers = await asyncio.gather(*(callback(ln, c["k1"], **sign(wallet_key, c["k1"]))
                                     for c in challenges))
    assert answers == [{"status": "OK"}] * 3
    users = {(await take_session(ln, c)).json()["user_id"] for c in challenges}
    assert len(users) == 1
    async with ln.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(LnurlAuthKey))
                ).scalar_one() == 1


async def login(ln: LnEnv, wallet_key: PrivateKey) -> dict:
    c = await challenge(ln)
    assert await callback(ln, c["k1"], **sign(wallet_key, c["k1"])) == {"status": "OK"}
    r = await take_session(ln, c)
    assert r.status_code == 201, r.text
    return r.json()


async def scopes_of(ln: LnEnv, token: str) -> tuple[int, list[str]]:
    r = await ln.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    return r.status_code, r.json().get("scopes", []) if r.status_code == 200 else []


async def test_a_login_issues_a_token_family_whose_money_scope_lapses(ln: LnEnv,
                                                                       clock: FakeClock):
    """Found in the Known gaps: every LNURL-auth login minted a new API key that never
    expired and carried withdrawals:write, so logins piled up permanent money credentials.
    A login now issues what a password + TOTP login issues: a token family (a 10-minute
    access token, a rotating refresh token), whose withdrawals:write holds 15 minutes from
    the wallet's signature and is then gone from the live token and from every refresh."""
    wallet_key = PrivateKey()
    first = await login(ln, wallet_key)
    assert first["token_type"] == "Bearer" and first["expires_in"] == 600
    assert first["scope"].split() == ["wallet:read", "wallet:write", "withdrawals:write"]
    assert first["api_key"] == first["access_token"]  # the field older clients read
    code, scopes = await scopes_of(ln, first["access_token"])
    assert code == 200 and "withdrawals:write" in scopes
    second = await login(ln, wallet_key)
    assert second["user_id"] == first["user_id"]
    async with ln.sessions() as s:  # no API key per login any more
        keys = (await s.execute(select(func.count()).select_from(ApiKey).where(
            ApiKey.owner_id == first["user_id"]))).scalar_one()
    assert keys == 0

    # A refresh within the window keeps the money scope; past it, it is gone.
    clock.advance(minutes=9)
    r = await ln.client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert r.status_code == 200 and "withdrawals:write" in r.json()["scope"].split(), r.text
    refreshed = r.json()
    clock.advance(minutes=2)  # 11 minutes: the first access token has expired
    assert (await scopes_of(ln, first["access_token"]))[0] == 401
    clock.advance(minutes=5)  # 16 minutes from the signature
    code, scopes = await scopes_of(ln, refreshed["access_token"])
    assert code == 200 and "withdrawals:write" not in scopes and "wallet:read" in scopes
    own = (await ln.client.get("/api/v1/me", headers={
        "Authorization": f"Bearer {refreshed['access_token']}"})).json()["wallets"][0]
    denied = await ln.client.post(f"/api/v1/wallets/{own}/lnurl-withdraw", headers={
        "Authorization": f"Bearer {refreshed['access_token']}", "Idempotency-Key": "v"},
        json={"amount_msat": 1000})
    assert denied.status_code == 403, denied.text
    r = await ln.client.post("/api/v1/auth/token", json={
        "grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]})
    assert r.status_code == 200 and "withdrawals:write" not in r.json()["scope"].split()
    # Signing out ends the family: its tokens stop working at once.
    later = r.json()
    assert (await ln.client.post("/api/v1/auth/token/revoke", json={
        "refresh_token": later["refresh_token"]})).status_code == 204
    assert (await scopes_of(ln, later["access_token"]))[0] == 401


def test_lnurl_auth_keys_from_before_are_revoked(tmp_path):
    """Migration 0052: the permanent keys earlier LNURL-auth logins minted (label
    ``lnurl-auth login``, owned by a user bound to a linking key) are revoked; a key of the
    same user made otherwise, and a key of another user that happens to bear the label, are
    left alone."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0051_risk_list_payment_uris")
    at = "2026-12-01 00:00:00"
    with sqlite3.connect(tmp_path / "m.db") as db:
        for user in ("usr_lnurl", "usr_other"):
            db.execute("INSERT INTO users (id, email, display_name, is_admin, status, "
                       "kyc_tier, created_at) VALUES (?, ?, '', 0, 'active', 0, ?)",
                       (user, f"{user}@example.com", at))
        db.execute("INSERT INTO lnurl_auth_keys (linking_key, user_id, created_at) "
                   "VALUES (?, 'usr_lnurl', ?)", ("02" + "ab" * 32, at))
        for key, owner, label in (("key_login", "usr_lnurl", "lnurl-auth login"),
                                  ("key_own", "usr_lnurl", "my bot"),
                                  ("key_named", "usr_other", "lnurl-auth login")):
            db.execute("INSERT INTO api_keys (id, owner_type, owner_id, label, scopes, "
                       "secret_hash, created_at) VALUES (?, 'user', ?, ?, ?, ?, ?)",
                       (key, owner, label, "wallet:read withdrawals:write", "0" * 64, at))
    upgrade(url)
    with sqlite3.connect(tmp_path / "m.db") as db:
        revoked = dict(db.execute("SELECT id, revoked_at IS NOT NULL FROM api_keys"))
    assert revoked == {"key_login": 1, "key_own": 0, "key_named": 0}
