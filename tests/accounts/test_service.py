"""Users, merchants, stores, wallets and API keys through the service functions."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select

from satvault.accounts import security
from satvault.accounts import service as acc
from satvault.accounts.models import ApiKey, AuditEvent
from satvault.kernel.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from satvault.ledger.store import get_account


async def test_user_merchant_store_wallets(sessions):
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="Alice@Example.com", password="correct horse")
        merchant = await acc.create_merchant(s, name="Shop", owner_user_id=user.id)
        store = await acc.create_store(s, merchant_id=merchant.id, name="Web", speed_policy=2)
        uw = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
        again = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
        mw = await acc.ensure_wallet(s, owner_type="merchant", owner_id=merchant.id)
        ledger_account = await get_account(s, uw.ledger_account_id)
    assert user.email == "alice@example.com" and store.merchant_id == merchant.id
    assert uw.id == again.id and uw.id != mw.id
    assert ledger_account.debits_must_not_exceed_credits
    async with sessions() as s:
        assert (await acc.authenticate_password(s, email="ALICE@example.com",
                                                password="correct horse")).id == user.id
        with pytest.raises(Unauthenticated):
            await acc.authenticate_password(s, email="alice@example.com", password="wrong pass")
        stored = (await s.get(type(user), user.id)).password_hash
        assert stored.startswith("$argon2id$") and "correct horse" not in stored


async def test_bad_input(sessions):
    async with sessions() as s, s.begin():
        await acc.create_user(s, email="bob@example.com")
    async with sessions() as s:
        with pytest.raises(AlreadyExists):
            await acc.create_user(s, email="BOB@example.com")
        with pytest.raises(InvalidInput):
            await acc.create_user(s, email="not-an-email")
        with pytest.raises(InvalidInput):
            await acc.create_user(s, email="c@example.com", password="short")
        with pytest.raises(NotFound):
            await acc.create_store(s, merchant_id="mer_missing", name="x")
        with pytest.raises(InvalidInput):
            await acc.create_api_key(s, owner_id="bogus", scopes=["wallet:read"])


async def test_api_keys_hashed_scoped_revocable(sessions):
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="k@example.com")
        key, token = await acc.create_api_key(s, owner_id=user.id,
                                              scopes=["wallet:read", "invoices:write"])
        with pytest.raises(InvalidInput, match="unknown scope"):
            await acc.create_api_key(s, owner_id=user.id, scopes=["wallet:steal"])
        with pytest.raises(InvalidInput, match="admin"):
            await acc.create_api_key(s, owner_id=user.id, scopes=["admin"])
    async with sessions() as s, s.begin():
        row = await s.get(ApiKey, key.id)
        assert token.split(".")[2] not in row.secret_hash and len(row.secret_hash) == 64
        p = await acc.authenticate_api_key(s, token)
        assert p.owner_id == user.id and p.has("wallet:read") and not p.has("withdrawals:write")
        with pytest.raises(Unauthenticated):
            await acc.authenticate_api_key(s, token[:-2] + "xx")
        with pytest.raises(Unauthenticated):
            await acc.authenticate_api_key(s, "garbage")
        await acc.revoke_api_key(s, key_id=key.id)
    async with sessions() as s:
        with pytest.raises(Unauthenticated, match="revoked"):
            await acc.authenticate_api_key(s, token)
        actions = (await s.execute(select(AuditEvent.action))).scalars().all()
        assert {"user.create", "apikey.create", "apikey.revoke"} <= set(actions)
        assert all(token not in d for d in (await s.execute(select(AuditEvent.state_after)))
                   .scalars())


def test_passwords_are_hashed_at_production_cost_outside_the_suite():
    """The suite's own process hashes passwords cheaply (tests/conftest.py); a process of the
    platform hashes them with argon2id at ``PasswordHasher()``'s cost (RFC 9106's second
    recommended option: 64 MiB, three passes, four lanes), and checks a cheap hash too."""
    cheap = security.hash_password("correct horse")
    script = ("import sys; from satvault.accounts.security import hash_password, "
              "verify_password; print(hash_password('correct horse')); "
              "print(verify_password('correct horse', sys.argv[1]))")
    out = subprocess.run([sys.executable, "-c", script, cheap], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0].startswith("$argon2id$v=19$m=65536,t=3,p=4$"), out
    assert out[1] == "True"
    assert not cheap.startswith("$argon2id$v=19$m=65536,")


@pytest.mark.parametrize("email", [
    "adm\u202enim@example.com",  # right-to-left override
    "admin\u200b@example.com",  # zero-width space
    "a\u00e9@example.com",  # not ASCII in the local part
    "bob@exa\u200dmple.com",  # zero-width joiner in the domain
    "bob@example.com\u200e",  # a direction mark
    "bo\x07b@example.com",  # a control
])
async def test_addresses_with_invisible_or_control_characters_are_refused(sessions, email):
    """Found from outside: e-mail addresses took control, bidi and zero-width characters,
    so one address could pass for another in every list and mail header."""
    async with sessions() as s:
        with pytest.raises(InvalidInput, match="not an e-mail address"):
            await acc.create_user(s, email=email)
    async with sessions() as s, s.begin():  # an IDN domain is still an address
        assert (await acc.create_user(s, email="Ana@M\u00fcnchen.example")).email \
            == "ana@m\u00fcnchen.example"
