"""The HTTP surface: health, authentication, scopes, ownership (404, not 403), statements,
problem+json errors, and refusal to run on an un-migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from satvault.accounts import service as acc
from satvault.config import Settings
from satvault.db import create_engine
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit
from satvault.migrate import SchemaNotCurrent
from satvault.web.app import create_app


@asynccontextmanager
async def client_for(engine, db_url) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=db_url), engine=engine, start_workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def world(sessions):
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
        alice = await acc.create_user(s, email="alice@example.com")
        bob = await acc.create_user(s, email="bob@example.com")
        _, admin_key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
        _, alice_key = await acc.create_api_key(s, owner_id=alice.id, scopes=["wallet:read"])
        _, alice_weak = await acc.create_api_key(s, owner_id=alice.id, scopes=["invoices:read"])
        aw = await acc.ensure_wallet(s, owner_type="user", owner_id=alice.id)
        bw = await acc.ensure_wallet(s, owner_type="user", owner_id=bob.id)
    await submit(sessions, [TransferSpec(f"dep{i}", platform.external.id, aw.ledger_account_id,
                                         1000 * (i + 1), "BTC") for i in range(5)])
    return {"admin": admin_key, "alice": alice_key, "weak": alice_weak,
            "alice_wallet": aw.id, "bob_wallet": bw.id}


def auth(token):
    return {"Authorization": f"Bearer {token}"}


async def test_health_and_openapi(engine, db_url):
    async with client_for(engine, db_url) as c:
        r = await c.get("/healthz")
        assert r.status_code == 200 and r.json()["database"] == "ok"
        assert "/api/v1/wallets/{wallet_id}" in (await c.get("/openapi.json")).json()["paths"]


async def test_authentication_errors_are_problem_json(engine, db_url, world):
    async with client_for(engine, db_url) as c:
        for headers in ({}, {"Authorization": "Basic abc"}, auth("sv.key_x.nope"),
                        {"X-Api-Key": "junk"}):
            r = await c.get("/api/v1/me", headers=headers)
            assert r.status_code == 401
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["status"] == 401
        r = await c.get("/api/v1/me", headers={"X-Api-Key": world["alice"]})
        assert r.status_code == 200 and world["alice_wallet"] in r.json()["wallets"]


async def test_verified_keys_are_remembered_for_the_ttl_only(engine, db_url, world, sessions):
    """A key revoked in another process (here: straight in the database) stops working once
    its cache entry is older than the TTL; a wrong secret for a cached key id never passes;
    failures are not cached."""
    from sqlalchemy import func, select

    from satvault.accounts.models import ApiKey
    from satvault.accounts.security import parse_token
    from satvault.web.deps import PrincipalCache

    now = [1000.0]
    async with client_for(engine, db_url) as c:
        cache = PrincipalCache(ttl=10, clock=lambda: now[0])
        c._transport.app.state.principals = cache  # type: ignore[attr-defined]
        assert (await c.get("/api/v1/me", headers=auth(world["alice"]))).status_code == 200
        key_id, _ = parse_token(world["alice"])
        forged = f"sv.{key_id}.{'A' * 43}"
        assert (await c.get("/api/v1/me", headers=auth(forged))).status_code == 401
        async with sessions() as s, s.begin():
            await acc.revoke_api_key(s, key_id=key_id)
        async with sessions() as s:
            revoked = (await s.execute(select(func.count()).select_from(ApiKey).where(
                ApiKey.revoked_at.is_not(None)))).scalar_one()
        assert revoked == 1
        now[0] += 9
        assert (await c.get("/api/v1/me", headers=auth(world["alice"]))).status_code == 200
        now[0] += 2
        r = await c.get("/api/v1/me", headers=auth(world["alice"]))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        # forget() drops a key at once (what an in-process revocation would call).
        assert (await c.get("/api/v1/me", headers=auth(world["admin"]))).status_code == 200
        admin_id, _ = parse_token(world["admin"])
        cache.forget(admin_id)
        assert cache.get(world["admin"]) is None


def test_principal_cache_bounds_its_size():
    from satvault.accounts.service import Principal
    from satvault.web.deps import PrincipalCache

    cache = PrincipalCache(ttl=60, max_entries=3)
    for i in range(5):
        cache.put(f"t{i}", Principal(f"key_{i}", "user", "usr_x", frozenset()))
    assert [cache.get(f"t{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert PrincipalCache(ttl=0).get("t") is None


async def test_wallet_ownership_and_scopes(engine, db_url, world):
    async with client_for(engine, db_url) as c:
        r = await c.get(f"/api/v1/wallets/{world['alice_wallet']}", headers=auth(world["alice"]))
        assert r.status_code == 200
        body = r.json()
        assert body["available_msat"] == 15_000 and body["unit"] == "msat"
        assert body["held_msat"] == 0 and body["incoming_msat"] == 0
        other = await c.get(f"/api/v1/wallets/{world['bob_wallet']}",
                            headers=auth(world["alice"]))
        missing = await c.get("/api/v1/wallets/wal_nope", headers=auth(world["alice"]))
        assert other.status_code == missing.status_code == 404
        assert other.json()["title"] == missing.json()["title"]
        weak = await c.get(f"/api/v1/wallets/{world['alice_wallet']}", headers=auth(world["weak"]))
        assert weak.status_code == 403
        admin = await c.get(f"/api/v1/wallets/{world['bob_wallet']}", headers=auth(world["admin"]))
        assert admin.status_code == 200


async def test_statement_over_http(engine, db_url, world):
    async with client_for(engine, db_url) as c:
        url = f"/api/v1/wallets/{world['alice_wallet']}/transactions"
        items, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await c.get(url, params=params, headers=auth(world["alice"]))).json()
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert [i["amount_msat"] for i in items] == [5000, 4000, 3000, 2000, 1000]
        assert [i["balance_msat"] for i in items] == [15000, 10000, 6000, 3000, 1000]
        bad = await c.get(url, params={"cursor": "zzz"}, headers=auth(world["alice"]))
        assert bad.status_code == 422
        too_big = await c.get(url, params={"limit": 100000}, headers=auth(world["alice"]))
        assert too_big.status_code == 422


async def test_admin_ledger_check(engine, db_url, world):
    async with client_for(engine, db_url) as c:
        r = await c.get("/api/v1/admin/ledger/check", headers=auth(world["admin"]))
        assert r.status_code == 200 and r.json()["ok"] is True
        r = await c.get("/api/v1/admin/ledger/check", headers=auth(world["alice"]))
        assert r.status_code == 403
        for bad in ("0", "-1", str(2**63), "8817127284454508583831719641088", "x"):
            r = await c.get(f"/api/v1/admin/ledger/accounts/{bad}", headers=auth(world["admin"]))
            assert r.status_code == 422, (bad, r.text)
        r = await c.get(f"/api/v1/admin/ledger/accounts/{2**63 - 1}",
                        headers=auth(world["admin"]))
        assert r.status_code == 404, r.text


async def test_refuses_unmigrated_database(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    engine = create_engine(url, pool_size=1)
    app = create_app(Settings(database_url=url), engine=engine, start_workers=False)
    with pytest.raises(SchemaNotCurrent, match="satvault db upgrade"):
        async with app.router.lifespan_context(app):
            pass
    await engine.dispose()
