"""Rate limits through the real app: failed authentication per client address and per key id,
every unauthenticated endpoint per address, object creation per API key; 429 problem+json
with ``Retry-After`` and nothing written. Each test runs with in-process storage and with
the real Redis (``SATVAULT_TEST_REDIS_URL``, default 127.0.0.1:6379), on SQLite and
PostgreSQL; two apps on one Redis share one budget, as ``serve --workers N`` processes do.

The budgets are a few requests per minute, so no test waits a window out; the one that
shows a short window moving on awaits the change instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import Store
from satvault.config import Settings
from satvault.ledger.platform import ensure_platform_accounts
from satvault.lightning.lnurl_models import LnurlAuthChallenge
from satvault.lightning.models import LnInvoice
from satvault.web.app import create_app
from tests.lightning_lnurl.fakes import FakeLightning

REDIS_URL = os.environ.get("SATVAULT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BASE = "http://limits.test"
BUDGET = 3  # every budget under test: 3 per minute


@pytest.fixture(params=["memory", "redis"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """(storage setting, a key prefix of this test's own); Redis keys removed afterwards."""
    prefix = f"sv-test-{secrets.token_hex(6)}"
    if request.param == "memory":
        yield "memory", prefix
        return
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except OSError as exc:  # redis' ConnectionError is an OSError
        await client.aclose()
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); the rate-limit tests "
                    "need the real one (set SATVAULT_TEST_REDIS_URL)")
    try:
        yield REDIS_URL, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"*{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@dataclass
class World:
    sessions: async_sessionmaker[AsyncSession]
    alice: str  # API key (wallet scopes) of a user
    bob: str
    merchant: str  # API key with stores:write of a merchant
    merchant2: str
    alice_wallet: str


@pytest.fixture
async def world(sessions) -> World:
    scopes = ["wallet:read", "wallet:write", "withdrawals:write"]
    async with sessions() as s, s.begin():
        await ensure_platform_accounts(s, "BTC")
        alice = await acc.create_user(s, email="alice@example.com")
        bob = await acc.create_user(s, email="bob@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=alice.id)
        _, alice_key = await acc.create_api_key(s, owner_id=alice.id, scopes=scopes)
        _, bob_key = await acc.create_api_key(s, owner_id=bob.id, scopes=scopes)
        shop = await acc.create_merchant(s, name="Shop")
        _, m1 = await acc.create_api_key(s, owner_id=shop.id, scopes=["stores:write"])
        _, m2 = await acc.create_api_key(s, owner_id=shop.id, scopes=["stores:write"])
    return World(sessions, alice_key, bob_key, m1, m2, wallet.id)


def limit_settings(db_url: str, home: Path, storage: tuple[str, str], **extra: Any) -> Settings:
    url, prefix = storage
    budget = f"{BUDGET}/minute"
    values: dict[str, Any] = dict(
        database_url=db_url, home=home, public_url=BASE, rate_limit_storage=url,
        rate_limit_key_prefix=prefix, rate_limit_trusted_proxies="127.0.0.1",
        rate_limit_auth_failures_per_address=budget, rate_limit_auth_failures_per_key=budget,
        rate_limit_public=budget, rate_limit_public_create=budget, rate_limit_create=budget)
    return Settings(**{**values, **extra})


@asynccontextmanager
async def serving(settings: Settings, sessions) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                                        FakeLightning]]:
    """The real app (its lifespan too) with a fake Lightning node, over ASGI."""
    lightning = FakeLightning()
    runtime = SimpleNamespace(lightning=lightning, payer_wake=None, backend=None)
    app = create_app(settings, engine=sessions.kw["bind"], start_workers=False,
                     runtime=runtime)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client, lightning


@pytest.fixture
async def app_for(db_url, tmp_path, storage, world) -> AsyncIterator[Callable[..., Any]]:
    """``await app_for(**settings)``: a client of a fresh app instance; every instance made
    in one test shares that test's storage (and so, on Redis, its budgets)."""
    async with AsyncExitStack() as stack:
        async def make(**extra: Any) -> tuple[httpx.AsyncClient, FakeLightning]:
            settings = limit_settings(db_url, tmp_path, storage, **extra)
            return await stack.enter_async_context(serving(settings, world.sessions))

        yield make


def bearer(token: str, address: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if address:
        headers["X-Forwarded-For"] = address
    return headers


async def new_store(client: httpx.AsyncClient, key: str, name: str = "x") -> httpx.Response:
    return await client.post("/api/v1/stores", json={"name": name},
                             headers={**bearer(key), "Idempotency-Key": secrets.token_hex(8)})


def random_key() -> str:
    return f"sv.key_{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"


def wrong_secret(token: str) -> str:
    prefix, key_id, _ = token.split(".")
    return f"{prefix}.{key_id}.{secrets.token_urlsafe(32)}"


def assert_limited(r: httpx.Response, *, at_most: int = 60) -> int:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"].endswith("/rate-limited") and body["status"] == 429, body
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= at_most, retry
    return retry


async def count(sessions, model: Any) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


# ------------------------------------------------------------------ failed authentication

async def test_failed_auth_per_address_then_429_before_the_database(app_for, world: World):
    client, _ = await app_for(api_key_cache_seconds=0)  # every request asks the limiter
    assert (await client.get("/api/v1/me", headers=bearer(world.alice))).status_code == 200
    for headers in (bearer(random_key()), {"Authorization": "Basic x"}, {}):
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 401
    for headers in (bearer(random_key()), {"Authorization": "Basic x"}, {}):
        assert_limited(await client.get("/api/v1/me", headers=headers))
    # A correct key never seen before is refused from that address as well ...
    assert_limited(await client.get("/api/v1/me", headers=bearer(world.bob)))
    # ... but one verified before is its owner's, whom others' failures do not lock out.
    assert (await client.get("/api/v1/me", headers=bearer(world.alice))).status_code == 200
    # Another client address has its own budget.
    r = await client.get("/api/v1/me", headers=bearer(world.bob, "203.0.113.7"))
    assert r.status_code == 200, r.text


async def test_failed_auth_per_key_id_from_many_addresses(app_for, world: World):
    client, _ = await app_for(api_key_cache_seconds=0)
    assert (await client.get("/api/v1/me", headers=bearer(world.alice))).status_code == 200
    for victim in (world.alice, world.merchant2):  # guessed from three addresses each
        for i in range(BUDGET):
            r = await client.get("/api/v1/me", headers=bearer(wrong_secret(victim),
                                                              f"198.51.100.{i + 1}"))
            assert r.status_code == 401, r.text
        r = await client.get("/api/v1/me", headers=bearer(wrong_secret(victim),
                                                          "198.51.100.99"))
        assert_limited(r)
    fresh = "198.51.100.99"
    # alice's key, verified before, is still hers; bob's key has a budget of its own; the
    # second merchant key, never used yet, waits out the window like its guessers.
    assert (await client.get("/api/v1/me", headers=bearer(world.alice, fresh))).status_code \
        == 200
    assert (await client.get("/api/v1/me", headers=bearer(world.bob, fresh))).status_code == 200
    assert_limited(await client.get("/api/v1/me", headers=bearer(world.merchant2, fresh)))


async def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(app_for):
    client, _ = await app_for(rate_limit_trusted_proxies="")
    for i in range(BUDGET):
        r = await client.get("/api/v1/me", headers=bearer(random_key(), f"192.0.2.{i}"))
        assert r.status_code == 401
    assert_limited(await client.get("/api/v1/me", headers=bearer(random_key(), "192.0.2.77")))


async def test_an_ipv6_client_counts_by_its_64(app_for):
    client, _ = await app_for()
    for host in ("2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::1"):
        assert (await client.get("/api/v1/me", headers=bearer(random_key(), host))
                ).status_code == 401
    assert_limited(await client.get("/api/v1/me", headers=bearer(random_key(),
                                                                  "2001:db8:1:2::c")))
    r = await client.get("/api/v1/me", headers=bearer(random_key(), "2001:db8:1:3::1"))
    assert r.status_code == 401
    # A proxy of ours never writes garbage: such a header counts as the proxy's own address.
    for _ in range(BUDGET):
        assert (await client.get("/api/v1/me", headers=bearer(random_key(), "not-an-ip"))
                ).status_code == 401
    assert_limited(await client.get("/api/v1/me", headers=bearer(random_key(), "nor-this")))


async def test_failures_are_progressive_over_longer_windows(app_for):
    """2 per second and 3 per minute: a client that waits out the short window gets one
    more try, then the minute window holds it."""
    client, _ = await app_for(rate_limit_auth_failures_per_address="2/second;3/minute")

    async def fail() -> httpx.Response:
        return await client.get("/api/v1/me", headers=bearer(random_key()))

    assert [(await fail()).status_code for _ in range(2)] == [401, 401]
    assert assert_limited(await fail(), at_most=1) == 1
    deadline = time.monotonic() + 5
    while (r := await fail()).status_code == 429:  # a 429 spends nothing: await the second
        assert time.monotonic() < deadline, "the one-second window never moved on"
        await asyncio.sleep(0.05)
    assert r.status_code == 401
    assert assert_limited(await fail()) > 1


async def test_retry_after_waits_for_every_window(app_for):
    """1 per second and 2 per minute on public reads: the third read must wait for the
    minute window, not only for the second one."""
    client, _ = await app_for(rate_limit_public="1/second;2/minute")
    page = "/i/inv_nothing/status"
    assert (await client.get(page)).status_code == 404
    assert assert_limited(await client.get(page), at_most=1) == 1
    deadline = time.monotonic() + 5
    while (r := await client.get(page)).status_code == 429:
        assert time.monotonic() < deadline, "the one-second window never moved on"
        await asyncio.sleep(0.05)
    assert r.status_code == 404
    assert assert_limited(await client.get(page)) > 50


async def test_the_event_stream_counts_failed_keys_too(app_for, world: World):
    client, _ = await app_for(rate_limit_public="100/minute")
    url = f"/api/v1/events/stream?wallet_id={world.alice_wallet}"
    for _ in range(BUDGET):
        assert (await client.get(url, headers=bearer(random_key()))).status_code == 401
    assert_limited(await client.get(url, headers=bearer(random_key())))


# ---------------------------------------------------------------- unauthenticated endpoints

async def test_lnurl_auth_challenge_flood(app_for, world: World):
    client, _ = await app_for()
    for _ in range(BUDGET):
        assert (await client.get("/lnurl-auth/challenge")).status_code == 200
    r = await client.get("/lnurl-auth/challenge")
    assert_limited(r)
    assert r.headers["Access-Control-Allow-Origin"] == "*"  # browser wallets read it
    assert await count(world.sessions, LnurlAuthChallenge) == BUDGET
    # The callback and the login exchange are in the same budget.
    assert_limited(await client.get("/lnurl-auth/callback", params={"tag": "login"}))
    assert_limited(await client.post(f"/lnurl-auth/{'0' * 64}/session",
                                     json={"session_token": "x"}))


async def test_lightning_address_callback_flood(app_for, world: World):
    client, lightning = await app_for(rate_limit_create="10/minute")
    r = await client.post(f"/api/v1/wallets/{world.alice_wallet}/lightning-address",
                          json={"username": "alice"}, headers=bearer(world.alice))
    assert r.status_code == 201, r.text
    for _ in range(BUDGET):
        r = await client.get("/lnurlp/alice/callback", params={"amount": 10_000})
        assert r.status_code == 200 and r.json()["pr"], r.text
    assert_limited(await client.get("/lnurlp/alice/callback", params={"amount": 10_000}))
    assert len(lightning.invoices) == BUDGET  # the node was not asked a fourth time
    assert await count(world.sessions, LnInvoice) == BUDGET
    # Each payer's wallet server is an address of its own.
    r = await client.get("/lnurlp/alice/callback", params={"amount": 10_000},
                         headers={"X-Forwarded-For": "203.0.113.50"})
    assert r.status_code == 200 and r.json()["pr"], r.text


async def test_every_public_read_shares_the_address_budget(app_for):
    client, _ = await app_for()
    paths = ["/i/inv_nothing", "/i/inv_nothing/status", "/.well-known/lnurlp/nobody",
             "/lnurlw/lnw_nothing", "/api/v1/events/stream?invoice_id=inv_nothing",
             "/healthz", "/api/v1/deposits/dep_nothing/qr.svg", "/checkout/static/x.css"]
    answered = [(await client.get(p)).status_code for p in paths[:BUDGET]]
    assert 429 not in answered, answered
    for path in paths[BUDGET:]:
        assert_limited(await client.get(path))


# -------------------------------------------------------------------------------- creation

async def test_creation_flood_per_key(app_for, world: World):
    client, _ = await app_for()
    for i in range(BUDGET):
        r = await new_store(client, world.merchant, f"s{i}")
        assert r.status_code == 201, r.text
    r = await new_store(client, world.merchant, "one too many")
    assert_limited(r)
    assert await count(world.sessions, Store) == BUDGET  # nothing written on the 429
    # Another key of the same merchant has a budget of its own.
    r = await new_store(client, world.merchant2, "other key")
    assert r.status_code == 201, r.text
    # The same ceiling on every kind of creation: vouchers, addresses, deposits, ...
    for i in range(BUDGET):
        r = await client.post(f"/api/v1/wallets/{world.alice_wallet}/lightning-address",
                              json={"username": f"a{i}"}, headers=bearer(world.alice))
        assert r.status_code == 201, r.text
    for path, body in ((f"/api/v1/wallets/{world.alice_wallet}/lnurl-withdraw",
                        {"amount_msat": 1000}),
                       (f"/api/v1/wallets/{world.alice_wallet}/withdrawals",
                        {"destination": "x", "amount_msat": 1000}),
                       (f"/api/v1/wallets/{world.alice_wallet}/deposits", {})):
        assert_limited(await client.post(path, json=body, headers=bearer(world.alice)))


# --------------------------------------------------------------------- processes and switch

async def test_two_app_instances_on_one_storage(app_for, storage, world: World):
    """Two API processes: with Redis one budget between them; in memory, one each."""
    first, _ = await app_for()
    second, _ = await app_for()
    shared = storage[0] != "memory"

    async def create(client: httpx.AsyncClient) -> httpx.Response:
        return await new_store(client, world.merchant)

    async def fail(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/api/v1/me", headers=bearer(random_key()))

    for client in (first, second, first):
        assert (await create(client)).status_code == 201
        assert (await fail(client)).status_code == 401
    if shared:
        assert_limited(await create(second))
        assert_limited(await fail(second))
    else:  # per process: the second has spent one of its three
        assert (await create(second)).status_code == 201
        assert (await fail(second)).status_code == 401


async def test_switched_off(app_for, world: World):
    client, _ = await app_for(rate_limit_enabled=False)
    for _ in range(BUDGET + 2):
        assert (await client.get("/api/v1/me", headers=bearer(random_key()))).status_code == 401
        assert (await client.get("/lnurl-auth/challenge")).status_code == 200


async def test_a_storage_outage_fails_open(db_url, tmp_path, world: World):
    """Redis gone mid-flight: requests are served (and a warning logged), not refused."""
    settings = limit_settings(db_url, tmp_path, ("redis://127.0.0.1:1/0", "sv-test-gone"))
    async with serving(settings, world.sessions) as (client, _):
        for _ in range(BUDGET + 1):
            assert (await client.get("/lnurl-auth/challenge")).status_code == 200
            r = await client.get("/api/v1/me", headers=bearer(random_key()))
            assert r.status_code == 401
        assert (await client.get("/api/v1/me", headers=bearer(world.alice))).status_code == 200


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_in_process_storage_keeps_the_moving_window_and_never_hops_threads(monkeypatch):
    """The memory storage decides as ``limits``' own does (a moving window), drops what has
    expired without a task or a thread, and keeps no key past its window."""
    from limits import parse
    from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    from satvault.web.ratelimit import LocalMemoryStorage

    clock = _Clock()
    monkeypatch.setattr(time, "time", clock)

    async def no_threads(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the in-process storage handed work to a thread")

    monkeypatch.setattr(asyncio, "to_thread", no_threads)
    storage = LocalMemoryStorage()
    moving, fixed = MovingWindowRateLimiter(storage), FixedWindowRateLimiter(storage)
    two_per_10s = parse("2/10 seconds")
    assert await moving.hit(two_per_10s, "k")
    clock.now += 6
    assert await moving.hit(two_per_10s, "k")
    assert not await moving.hit(two_per_10s, "k")  # both within the last 10 s
    clock.now += 4.5  # the first has left the window, the second not
    assert await moving.hit(two_per_10s, "k")
    assert not await moving.hit(two_per_10s, "k")
    assert await fixed.hit(two_per_10s, "f") and await fixed.hit(two_per_10s, "f")
    assert not await fixed.hit(two_per_10s, "f")
    assert storage.timer is None  # no expiry task was started

    clock.now += 60  # everything expired; the next call sweeps it away
    assert await moving.hit(parse("1/second"), "other")
    assert len(storage.events) == 1  # only the new key's entry
    assert not storage.storage and not storage.expirations
    assert await fixed.hit(two_per_10s, "f")  # a fresh window
