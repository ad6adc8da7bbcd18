"""LNURL-auth logins (LUD-04): a wallet signs k1, the browser that asked exchanges the
verified challenge for an API key, once; replays, bad signatures and expiry are refused."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from coincurve import PrivateKey
from sqlalchemy import func, select, update

from satvault.accounts.models import User
from satvault.db import utcnow
from satvault.lightning.lnurl import decode_lnurl
from satvault.lightning.lnurl_models import LnurlAuthChallenge, LnurlAuthKey
from satvault.lightning.lnurl_service import verify_login_signature
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
