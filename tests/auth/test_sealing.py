"""TOTP secrets and JWT signing keys sealed at rest under SATVAULT_SECRET_KEY: the database
holds neither in clear, sign-in and tokens work as before, and a wrong or missing key opens
nothing."""

from __future__ import annotations

import pyotp
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.auth import totp
from satvault.auth.credentials import AuthPolicy
from satvault.auth.models import Credentials, SigningKey
from satvault.auth.sealing import SealedSecretUnavailable, Sealer
from tests.auth.conftest import client_for, settings_for

PASSWORD = "correct horse battery"
KEY = SecretStr("k" * 40)


def test_sealed_values_open_only_with_their_key_and_row():
    sealer = Sealer(b"one key")
    sealed = sealer.seal("JBSWY3DPEHPK3PXP", purpose="totp secret", row="usr_a")
    assert sealed.startswith("v1:") and "JBSWY3DPEHPK3PXP" not in sealed
    assert sealer.open(sealed, purpose="totp secret", row="usr_a") == "JBSWY3DPEHPK3PXP"
    with pytest.raises(SealedSecretUnavailable):  # copied into another row
        sealer.open(sealed, purpose="totp secret", row="usr_b")
    with pytest.raises(SealedSecretUnavailable):
        Sealer(b"another key").open(sealed, purpose="totp secret", row="usr_a")
    with pytest.raises(SealedSecretUnavailable):
        Sealer(None).open(sealed, purpose="totp secret", row="usr_a")
    # Stored before a key was set: still opens.
    assert sealer.open("JBSWY3DPEHPK3PXP", purpose="totp secret", row="usr_a") \
        == "JBSWY3DPEHPK3PXP"
    assert Sealer(None).seal("x", purpose="p", row="r") == "x"


async def test_totp_and_jwt_keys_are_sealed_in_the_database(engine, db_url, smtp, sessions,
                                                            clock):
    policy = AuthPolicy.from_settings(settings_for(db_url, smtp[1], secret_key=KEY))
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="sam@example.com", password=PASSWORD)
        enrollment = await totp.begin_enrollment(s, user_id=user.id, policy=policy)
        code = pyotp.TOTP(enrollment.secret)
        await totp.confirm_enrollment(s, user_id=user.id, code=code.at(clock.now()),
                                      policy=policy)
    clock.advance(seconds=30)
    async with client_for(engine, db_url, smtp[1], secret_key=KEY) as client:
        r = await client.post("/api/v1/auth/token", json={
            "grant_type": "password", "email": "sam@example.com", "password": PASSWORD,
            "totp_code": code.at(clock.now())})
        assert r.status_code == 200, r.text
        access = r.json()["access_token"]
        me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {access}"})
        assert me.status_code == 200
    async with sessions() as s:
        stored = (await s.get(Credentials, user.id)).totp_secret
        keys = list((await s.execute(select(SigningKey.secret))).scalars())
    assert stored.startswith("v1:") and enrollment.secret not in stored
    assert keys and all(k.startswith("v1:") for k in keys)
    # Another key (or none) opens nothing: the token cannot be verified, and says why.
    async with client_for(engine, db_url, smtp[1], secret_key=SecretStr("z" * 40)) as other:
        r = await other.get("/api/v1/me", headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 503 and r.json()["type"].endswith("/secret-key-missing")
