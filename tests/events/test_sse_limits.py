"""What open event streams cost, through the app served by uvicorn: how many may stay open
per client address and per process (a 429 problem beyond, the slot given back when a stream
ends), shared between API processes when the rate limits live in Redis (the real one,
``SATVAULT_TEST_REDIS_URL``), and what they cost the database: one read of the outbox per
tick for the whole process, none while no stream is open, and on SQLite never the write
lock."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from sqlalchemy import event

from satvault.accounts import service as acc
from satvault.config import Settings
from satvault.web.app import create_app
from tests.events.conftest import serve
from tests.events.test_sse import emit_for, events
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # run first: see tests/conftest.py

REDIS_URL = os.environ.get("SATVAULT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STREAM = "/api/v1/events/stream"


@pytest.fixture(params=["memory", "redis"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """(rate-limit storage, a key prefix of this test's own); Redis keys removed after."""
    prefix = f"sv-test-{secrets.token_hex(6)}"
    if request.param == "memory":
        yield "memory", prefix
        return
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except OSError as exc:
        await client.aclose()
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); the stream caps "
                    "shared between processes need the real one (set SATVAULT_TEST_REDIS_URL)")
    try:
        yield REDIS_URL, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"*{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def app_with(db_url, tmp_path, engine) -> Callable[..., FastAPI]:
    def make(storage: tuple[str, str] = ("memory", "sv-test"), **extra: Any) -> FastAPI:
        values: dict[str, Any] = dict(
            database_url=db_url, home=tmp_path, rate_limit_storage=storage[0],
            rate_limit_key_prefix=storage[1], rate_limit_trusted_proxies="127.0.0.1")
        return create_app(Settings(**{**values, **extra}), engine=engine,
                          start_workers=False)

    return make


def origin(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


class Streams:
    """Streams held open by a test: ``await open(...)`` gives the response of one (a 200
    whose first line was read, or the refusal), ``await close(r)`` hangs one up."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, stack: AsyncExitStack
                 ) -> None:
        self.app, self.client, self.stack = app, client, stack
        self._open: dict[int, AsyncExitStack] = {}

    async def open(self, address: str = "203.0.113.1", **params: str) -> httpx.Response:
        inner = AsyncExitStack()
        r = await inner.enter_async_context(self.client.stream(
            "GET", STREAM, params=params or {"invoice_id": "inv_a"}, headers=origin(address)))
        if r.status_code != 200:
            await r.aread()
            await inner.aclose()
            return r
        lines = r.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        r.extensions["lines"] = lines  # kept: dropping the iterator would close the stream
        self._open[id(r)] = inner
        self.stack.push_async_callback(inner.aclose)
        return r

    async def close(self, r: httpx.Response) -> None:
        await self._open.pop(id(r)).aclose()


@asynccontextmanager
async def streaming(app: FastAPI) -> AsyncIterator[Streams]:
    async with AsyncExitStack() as stack:
        base = await stack.enter_async_context(serve(app, lifespan=True))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=30))
        yield Streams(app, client, stack)


def assert_refused(r: httpx.Response, *, what: str) -> None:
    assert r.status_code == 429, r.status_code
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith("/too-many-streams") and what in body["detail"], body
    assert int(r.headers["Retry-After"]) >= 1


# ------------------------------------------------------------------------------ the caps

async def test_open_streams_are_capped_per_address_and_per_process(app_with, sessions,
                                                                   storage, world):
    await emit_for(sessions, "inv_a", "invoice.created")
    app = app_with(storage, streams_per_address=2, streams_max=3)
    async with streaming(app) as streams:
        first = await streams.open("203.0.113.1")
        assert first.status_code == 200
        assert (await streams.open("203.0.113.1")).status_code == 200
        assert_refused(await streams.open("203.0.113.1"), what="this address")
        # Another client is not held back by the first one's streams ...
        assert (await streams.open("198.51.100.7")).status_code == 200
        # ... until the process has as many as it keeps open.
        assert_refused(await streams.open("198.51.100.8"), what="this server")
        # A stream that ends gives its slot back.
        await streams.close(first)

        async def reopened() -> bool:
            r = await streams.open("203.0.113.1")
            return r.status_code == 200

        await eventually(reopened, message="the closed stream's slot was never given back")
        assert_refused(await streams.open("203.0.113.1"), what="this address")


async def test_the_caps_hold_under_concurrent_opens(app_with, sessions, storage, world):
    await emit_for(sessions, "inv_a", "invoice.created")
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=world.merchant)
        _, key = await acc.create_api_key(s, owner_id=world.merchant, scopes=["wallet:read"])
    app = app_with(storage, streams_per_address=3, streams_max=5)
    async with streaming(app) as streams:
        # Both kinds of stream count: a burst from one address gets three at most ...
        streams.client.headers["Authorization"] = f"Bearer {key}"
        burst = await asyncio.gather(*[
            streams.open("203.0.113.1", **({"wallet_id": wallet.id} if i % 2 else {}))
            for i in range(10)])
        assert sorted(r.status_code for r in burst) == [200] * 3 + [429] * 7
        # ... and a burst from many addresses fills the process's five, no more.
        burst = await asyncio.gather(*[streams.open(f"198.51.100.{i}") for i in range(10)])
        assert sorted(r.status_code for r in burst) == [200] * 2 + [429] * 8


async def test_api_processes_share_the_per_address_cap_in_redis(app_with, sessions, world,
                                                                storage):
    """Two API processes on one Redis: one address gets ``streams_per_address`` between them
    (in memory each process counts its own); a process's own total stays its own."""
    await emit_for(sessions, "inv_a", "invoice.created")
    shared = storage[0] != "memory"
    async with streaming(app_with(storage, streams_per_address=2)) as one, \
            streaming(app_with(storage, streams_per_address=2)) as two:
        assert (await one.open()).status_code == 200
        held = await two.open()
        assert held.status_code == 200
        third = await asyncio.gather(one.open(), two.open())
        if shared:
            assert all(r.status_code == 429 for r in third), third
            await two.close(held)  # given back to both processes

            async def reopened() -> bool:
                return (await one.open()).status_code == 200

            await eventually(reopened)
        else:
            assert all(r.status_code == 200 for r in third)


@pytest.mark.parametrize("storage", ["redis"], indirect=True)  # memory dies with its process
async def test_a_slot_left_by_a_dead_process_expires(app_with, sessions, world, storage,
                                                     monkeypatch):
    """A process that dies with streams open cannot give their slots back: each slot is kept
    in Redis with an expiry that its living process refreshes, so a dead one's slots count
    only until then, never forever; a living stream's slot never lapses."""
    from satvault.web import streamslots

    # refreshed every second: a loaded machine's stalled event loop (seen at 2 s, refreshed
    # every 0.67 s, in a CI run beside other suites) does not let a living slot lapse
    monkeypatch.setattr(streamslots, "SLOT_SECONDS", 3.0)
    await emit_for(sessions, "inv_a", "invoice.created")
    async with streaming(app_with(storage, streams_per_address=1)) as alive, \
            streaming(app_with(storage, streams_per_address=1)) as dying:
        assert (await alive.open("203.0.113.1")).status_code == 200
        await asyncio.sleep(6.5)  # more than twice the slot's life: it was refreshed
        assert_refused(await dying.open("203.0.113.1"), what="this address")

        assert (await dying.open("198.51.100.9")).status_code == 200
        # The process is gone as far as Redis can tell: no refresh, no release.
        slots = dying.app.state.stream_slots
        reachable, slots.redis = slots.redis, aioredis.Redis.from_url(
            "redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
        await reachable.aclose()
        assert_refused(await alive.open("198.51.100.9"), what="this address")

        async def freed() -> bool:
            return (await alive.open("198.51.100.9")).status_code == 200

        await eventually(freed, timeout=10, message="a dead process's slot never expired")


async def test_a_server_that_stops_gives_its_streams_slots_back(app_with, sessions, world,
                                                               storage):
    """A server shutting down with streams open ends them and gives their slots back (in
    Redis at once, not when they would expire)."""
    await emit_for(sessions, "inv_a", "invoice.created")
    async with streaming(app_with(storage, streams_per_address=1)) as other, \
            AsyncExitStack() as client_side:
        app = app_with(storage, streams_per_address=1)
        server = AsyncExitStack()
        base = await server.enter_async_context(serve(app, lifespan=True))
        client = await client_side.enter_async_context(
            httpx.AsyncClient(base_url=base, timeout=30))
        r = await client_side.enter_async_context(client.stream(
            "GET", STREAM, params={"invoice_id": "inv_a"}, headers=origin("203.0.113.1")))
        assert r.status_code == 200
        lines = r.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        assert app.state.stream_slots.open == 1
        if storage[0] != "memory":
            assert_refused(await other.open("203.0.113.1"), what="this address")
        await server.aclose()  # the server stops while the client still listens
        assert app.state.stream_slots.open == 0
        if storage[0] != "memory":
            assert (await other.open("203.0.113.1")).status_code == 200


# ---------------------------------------------------------------------------- the cost

class StatementCounter:
    def __init__(self, engine: Any) -> None:
        self.engine, self.count = engine.sync_engine, 0

    def __call__(self, *_args: Any) -> None:
        self.count += 1

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *_exc: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self)

    async def over(self, seconds: float) -> int:
        start = self.count
        await asyncio.sleep(seconds)
        return self.count - start


async def test_open_streams_share_one_read_of_the_outbox(app_with, engine, sessions, world):
    """Thirty open streams used to read the outbox thirty times every half second; the
    process now reads it once per tick and hands each stream its own events, and not at
    all while no stream is open."""
    invoices = [f"inv_{i}" for i in range(30)]
    for inv in invoices:
        await emit_for(sessions, inv, "invoice.created")
    app = app_with(streams_per_address=100)
    async with serve(app, lifespan=True) as base, \
            httpx.AsyncClient(base_url=base, timeout=30) as client:
        with StatementCounter(engine) as counter:
            assert await counter.over(1.2) == 0  # nobody streams: nobody polls
            async with AsyncExitStack() as stack:
                takes = [await stack.enter_async_context(
                    events(client, params={"invoice_id": inv})) for inv in invoices]
                for take in takes:
                    assert len(await take(1)) == 1
                # (On PostgreSQL each stream looks once, a tick or two after it opened, for
                # a row of its own that committed late.)
                await asyncio.sleep(1.5)
                idle = await counter.over(2.0)  # four ticks
                assert idle <= 16, f"{idle} statements in 2 s for 30 idle streams"
                # Live events still reach each stream (and only its own).
                await emit_for(sessions, invoices[7], "invoice.settled")
                await emit_for(sessions, invoices[21], "invoice.expired")
                assert (await takes[7](1))[0]["event"] == "invoice.settled"
                assert (await takes[21](1))[0]["event"] == "invoice.expired"
            await eventually(lambda: engine.sync_engine.pool.checkedout() == 0)
            await asyncio.sleep(0.6)  # the poller notices it has nobody to read for
            assert await counter.over(1.2) == 0, "the outbox was read with no stream open"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # SQLite's single write lock
async def test_a_streams_read_leaves_sqlite_writable_by_another_process(
        app_with, engine, db_url, sessions, world, tmp_path):
    """Every SQLite transaction here is BEGIN IMMEDIATE: the write lock from its first
    statement, the stream's reads of the outbox included. While one such read ran (held in
    the middle here), another process (the CLI, a worker process) could not write: a read
    of the outbox must not take the write lock."""
    await emit_for(sessions, "inv_a", "invoice.created")
    entered, gate = threading.Event(), threading.Event()

    def trace(sql: str) -> None:
        if "outbox_events.payload" in sql and not entered.is_set():
            entered.set()
            gate.wait(10)

    app = app_with()
    async with serve(app, lifespan=True) as base, \
            httpx.AsyncClient(base_url=base, timeout=30) as client:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.set_trace_callback(trace)
        try:
            async with client.stream("GET", STREAM, params={"invoice_id": "inv_a"}) as r:
                assert r.status_code == 200
                lines = r.aiter_lines()
                assert (await anext(lines)).startswith("retry:")
                await eventually(entered.is_set, message="no read of the outbox started")
                path = db_url.split("///", 1)[1]

                def write_elsewhere() -> None:
                    other = sqlite3.connect(path, timeout=1.0, isolation_level=None)
                    try:
                        other.execute("BEGIN IMMEDIATE")
                        other.execute("UPDATE stores SET name = name")
                        other.execute("COMMIT")
                    finally:
                        other.close()

                await asyncio.to_thread(write_elsewhere)  # "database is locked" before
        finally:
            gate.set()
