"""Live updates over server-sent events, against the app served by uvicorn: an invoice's
events in order (and only its own, in their public form), live ones as they commit, resuming
with Last-Event-ID; wallet streams need a key that sees the wallet."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from satvault.accounts import service as acc
from satvault.db import create_engine, utcnow
from satvault.events.outbox import emit
from tests.events.conftest import add_webhook, api_client, serve
from tests.waiting import eventually


async def emit_for(sessions, invoice_id: str, *types: str, secret_note: str = "") -> list[int]:
    ids = []
    async with sessions() as s, s.begin():
        for t in types:
            ids.append(await emit(s, type=t, subject_type="invoice", subject_id=invoice_id,
                                  payload={"id": invoice_id, "status": t.split(".")[1],
                                           "metadata": {"orderId": secret_note}}))
    return ids


@asynccontextmanager
async def events(client: httpx.AsyncClient, **kwargs: Any) -> AsyncIterator[Any]:
    """Open a stream; yields an async function returning the next n events."""
    async with client.stream("GET", "/api/v1/events/stream", **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        async with asyncio.timeout(10):  # the stream's first line: it stands where it starts
            while not (await anext(lines)).startswith("retry:"):
                pass

        async def take(n: int, within: float = 5) -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            frame: dict[str, Any] = {}
            async with asyncio.timeout(within):
                while len(got) < n:
                    line = await anext(lines)
                    if not line:
                        if "id" in frame:  # the stream's position; the event's id is data's
                            frame["event_id"] = frame["data"]["id"]
                            got.append(frame)
                        frame = {}
                    elif not line.startswith(":"):
                        key, _, value = line.partition(": ")
                        frame[key] = json.loads(value) if key == "data" else value
            return got

        yield take


async def test_invoice_stream_in_order_live_and_resumable(make_app, sessions, world):
    first = await emit_for(sessions, "inv_a", "invoice.created", "invoice.payment_received",
                           secret_note="order-42")
    await emit_for(sessions, "inv_b", "invoice.created")
    async with serve(make_app()) as base, httpx.AsyncClient(base_url=base) as client:
        async with events(client, params={"invoice_id": "inv_a"}) as take:
            got = await take(2)
            assert [e["event_id"] for e in got] == first
            assert [e["event"] for e in got] == ["invoice.created", "invoice.payment_received"]
            data = got[1]["data"]
            assert data["id"] == first[1] and data["type"] == "invoice.payment_received"
            # Public: the invoice's id and status, not the merchant's metadata.
            assert data["data"] == {"id": "inv_a", "status": "payment_received"}
            live = await emit_for(sessions, "inv_a", "invoice.processing")
            await emit_for(sessions, "inv_b", "invoice.expired")
            live += await emit_for(sessions, "inv_a", "invoice.settled")
            got = await take(2)
            assert [e["event_id"] for e in got] == live
            assert [e["event"] for e in got] == ["invoice.processing", "invoice.settled"]

        # The page reconnects after the first live event: it gets the rest, nothing twice.
        async with events(client, params={"invoice_id": "inv_a"},
                          headers={"Last-Event-ID": str(live[0])}) as take:
            (rest,) = await take(1)
            assert rest["event_id"] == live[1]
        async with events(client, params={"invoice_id": "inv_a",
                                          "last_event_id": first[0]}) as take:
            assert [e["event_id"] for e in await take(3)] == [first[1], *live]

        for params, status in [({"invoice_id": "inv_nope"}, 404), ({}, 422),
                               ({"invoice_id": "inv_a", "wallet_id": "wal_x"}, 422)]:
            r = await client.get("/api/v1/events/stream", params=params)
            assert r.status_code == status, (params, r.text)
        for bad in ("banana", "9" * 30, "-1"):
            r = await client.get("/api/v1/events/stream", params={"invoice_id": "inv_a"},
                                 headers={"Last-Event-ID": bad})
            assert r.status_code == 422, bad
        r = await client.get("/api/v1/events/stream",
                             params={"invoice_id": "inv_a", "last_event_id": 10**19})
        assert r.status_code == 422


async def test_wallet_stream_needs_a_key_that_sees_the_wallet(make_app, sessions, world):
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=world.merchant)
        other = await acc.ensure_wallet(s, owner_type="merchant", owner_id=world.other_merchant)
        _, own_key = await acc.create_api_key(s, owner_id=world.merchant,
                                              scopes=["wallet:read"])
        _, weak_key = await acc.create_api_key(s, owner_id=world.merchant,
                                               scopes=["invoices:read"])
        await emit(s, type="wallet.balance_changed", subject_type="wallet",
                   subject_id=wallet.id, payload={"available_msat": 1})  # before connecting
    async with serve(make_app()) as base, httpx.AsyncClient(base_url=base) as client:
        url = "/api/v1/events/stream"
        assert (await client.get(url, params={"wallet_id": wallet.id})).status_code == 401
        r = await client.get(url, params={"wallet_id": wallet.id},
                             headers={"Authorization": f"Bearer {weak_key}"})
        assert r.status_code == 403
        r = await client.get(url, params={"wallet_id": other.id},
                             headers={"Authorization": f"Bearer {own_key}"})
        assert r.status_code == 404
        async with events(client, params={"wallet_id": wallet.id},
                          headers={"Authorization": f"Bearer {own_key}"}) as take:
            async with sessions() as s, s.begin():
                await emit(s, type="wallet.balance_changed", subject_type="wallet",
                           subject_id=other.id, payload={"available_msat": 7})
                await emit(s, type="withdrawal.created", subject_type="withdrawal",
                           subject_id="wd_1", wallet_id=wallet.id,
                           payload={"id": "wd_1", "amount_msat": 5})
                await emit(s, type="wallet.balance_changed", subject_type="wallet",
                           subject_id=wallet.id, payload={"available_msat": 2})
            got = await take(2)
            assert [e["event"] for e in got] == ["withdrawal.created", "wallet.balance_changed"]
            assert got[0]["data"]["data"] == {"id": "wd_1", "amount_msat": 5}  # in full
            assert got[1]["data"]["data"] == {"available_msat": 2}


class _PollHold:
    """Holds the stream's next outbox read where it runs: on SQLite inside the statement (a
    trace callback on the connection's thread blocks until released, then the read returns
    its rows), on PostgreSQL behind an ACCESS EXCLUSIVE lock taken by another connection."""

    def __init__(self, engine: AsyncEngine, db_url: str) -> None:
        self.engine, self.sqlite = engine, db_url.startswith("sqlite")
        self.entered, self.gate = threading.Event(), threading.Event()
        self.locker: AsyncEngine | None = None
        self.lock_conn: Any = None

    async def arm_sqlite(self) -> None:
        def trace(sql: str) -> None:
            if "outbox_events.payload" in sql and not self.entered.is_set():
                self.entered.set()
                self.gate.wait(10)

        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.set_trace_callback(trace)

    async def lock_pg(self) -> None:
        self.locker = create_engine(self.engine.url.render_as_string(hide_password=False),
                                    pool_size=1)
        self.lock_conn = await self.locker.connect()
        await self.lock_conn.begin()
        await self.lock_conn.execute(text("LOCK TABLE outbox_events IN ACCESS EXCLUSIVE MODE"))

    async def held(self) -> bool:
        if self.sqlite:
            return self.entered.is_set()
        async with self.engine.connect() as conn:
            waiting = (await conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE NOT granted "
                "AND relation = 'outbox_events'::regclass"))).scalar_one()
        return bool(waiting)

    async def release(self) -> None:
        self.gate.set()
        conn, locker, self.lock_conn, self.locker = self.lock_conn, self.locker, None, None
        if conn is not None:
            await conn.rollback()
            await conn.close()
        if locker is not None:
            await locker.dispose()


async def test_a_stream_dropped_in_the_middle_of_a_read_leaves_the_database_writable(
        make_app, engine, db_url, sessions, world, fake_dns):
    """A client leaving while the stream's read runs cancels that read: the connection is
    thrown away, and its cursor lives on in the cancellation's traceback until the garbage
    collector frees it (kept alive here by pausing the collector, as a busy process does for
    seconds). On SQLite that cursor used to keep the dropped connection's transaction, and with
    it the write lock, so the next write waited for the busy timeout and failed with
    "database is locked". Nothing may wait for the collector: the write goes through now.
    (On PostgreSQL the read held is the process's reader of the outbox, which the streams
    share: no client leaving cancels it, the server stopping does.)"""
    fake_dns["hooks.acme.example"] = ["93.184.215.14"]
    await emit_for(sessions, "inv_a", "invoice.created", "invoice.payment_received")
    hold = _PollHold(engine, db_url)
    dropped: list[BaseException] = []

    def note_dropped(_conn: Any, _rec: Any, exc: BaseException) -> None:
        dropped.append(exc)

    event.listen(engine.sync_engine.pool, "invalidate", note_dropped)
    if hold.sqlite:
        await hold.arm_sqlite()
    gc.collect()
    gc.disable()
    try:
        async with AsyncExitStack() as server, \
                httpx.AsyncClient(timeout=60) as client:
            base = await server.enter_async_context(serve(make_app(), lifespan=True))
            async with client.stream("GET", f"{base}/api/v1/events/stream",
                                     params={"invoice_id": "inv_a"}) as response:
                assert response.status_code == 200
                lines = response.aiter_lines()  # kept: dropping it would close the stream
                assert (await anext(lines)).startswith("retry:")
                if not hold.sqlite:
                    await hold.lock_pg()
                await eventually(hold.held, message="the stream's read never started")
            if not hold.sqlite:
                await server.aclose()
            # The client is gone (the server too, on PostgreSQL): the read is cancelled.
            await eventually(lambda: dropped, message="the read was not cancelled")
            await hold.release()
            await eventually(lambda: engine.sync_engine.pool.checkedout() == 0)
            async with asyncio.timeout(5):  # it used to wait out the 60 s busy timeout
                webhook, _ = await add_webhook(sessions, world.store,
                                               "https://hooks.acme.example/satvault")
            assert webhook
    finally:
        gc.enable()
        await hold.release()
        event.remove(engine.sync_engine.pool, "invalidate", note_dropped)


async def test_a_wallet_stream_ends_when_its_key_is_revoked(engine, db_url, tmp_path, sessions,
                                                            world, monkeypatch):
    """Found from outside: a wallet stream checked its key once, when it opened, and went on
    sending the wallet's events (withdrawal destinations, balances) after the key was
    revoked. It asks again before sending (here at every frame) and ends at the first no."""
    from contextlib import suppress

    from satvault.config import Settings
    from satvault.web.app import create_app
    from satvault.web.routes import streams

    monkeypatch.setattr(streams, "RECHECK_SECONDS", 0.0)
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=world.merchant)
        key, token = await acc.create_api_key(s, owner_id=world.merchant,
                                              scopes=["wallet:read"])
    # No key cache: a revocation counts at once (the cache's lifetime is documented apart).
    app = create_app(Settings(database_url=db_url, home=tmp_path, api_key_cache_seconds=0),
                     engine=engine, start_workers=False)
    auth = {"Authorization": f"Bearer {token}"}
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client, \
            events(client, params={"wallet_id": wallet.id}, headers=auth) as take:
        async with sessions() as s, s.begin():
            await emit(s, type="wallet.balance_changed", subject_type="wallet",
                       subject_id=wallet.id, payload={"available_msat": 1})
        assert len(await take(1)) == 1  # live while the key is valid
        async with sessions() as s, s.begin():
            await acc.revoke_api_key(s, key_id=key.id, actor="cli")
            await emit(s, type="withdrawal.created", subject_type="withdrawal",
                       subject_id="wd_secret", wallet_id=wallet.id,
                       payload={"id": "wd_secret", "destination": "bc1q-secret"})
        leaked = None
        with suppress(TimeoutError, StopAsyncIteration, httpx.HTTPError):
            leaked = await take(1)
        assert not leaked, f"a revoked key still received {leaked}"


async def test_an_event_that_commits_after_a_later_one_still_reaches_the_stream(
        make_app, sessions, world):
    """Found from outside: on PostgreSQL an outbox id is taken at INSERT and becomes visible
    at COMMIT, so a transaction holding a lower id can commit after one holding a higher id.
    The stream read ``id > last sent``: once the higher id was sent, the lower one, committed
    a moment later, was never sent. (On SQLite writers take the write lock up front and ids
    commit in order.)"""
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=world.merchant)
        _, key = await acc.create_api_key(s, owner_id=world.merchant, scopes=["wallet:read"])
    sqlite = "sqlite" in str(sessions.kw["bind"].url)
    async with serve(make_app()) as base, httpx.AsyncClient(base_url=base) as client, \
            events(client, params={"wallet_id": wallet.id},
                   headers={"Authorization": f"Bearer {key}"}) as take:
        slow = sessions()
        await slow.begin()
        try:
            early = await emit(slow, type="withdrawal.created", subject_type="withdrawal",
                               subject_id="wd_early", wallet_id=wallet.id,
                               payload={"id": "wd_early"})
            if sqlite:  # the open writer holds the lock: commit it first, as SQLite orders
                await slow.commit()
            async with sessions() as s, s.begin():
                late = await emit(s, type="withdrawal.created", subject_type="withdrawal",
                                  subject_id="wd_late", wallet_id=wallet.id,
                                  payload={"id": "wd_late"})
            assert early < late
            if sqlite:
                got = await take(2)
            else:
                got = await take(1)
                assert [e["event_id"] for e in got] == [late]
                await slow.commit()
                got += await take(1)
        finally:
            await slow.close()
        assert sorted(e["event_id"] for e in got) == [early, late]


async def test_a_stream_keeps_sending_past_thirty_thousand_events_behind_an_open_one(
        make_app, sessions, world):
    """Found from outside (a lead this stop's probe left): while one transaction holding a
    lower id stays open (a backup's can stay open for long), the stream's floor stays still.
    It skipped what it had sent by passing every such id to the database, so each poll
    compared each row with each id (and past 32,767 ids the driver refuses): 33,000 events
    stalled it. Now a poll reads only above the last id sent, and the range the floor passes
    is looked at once. (On SQLite ids commit in order: the same events take the ordered
    path.)"""
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=world.merchant)
        _, key = await acc.create_api_key(s, owner_id=world.merchant, scopes=["wallet:read"])
    sqlite = "sqlite" in str(sessions.kw["bind"].url)
    many = 33_000
    async with serve(make_app()) as base, httpx.AsyncClient(
            base_url=base, timeout=60) as client, \
            events(client, params={"wallet_id": wallet.id},
                   headers={"Authorization": f"Bearer {key}"}) as take:
        slow = sessions()
        await slow.begin()
        try:
            early = await emit(slow, type="withdrawal.created", subject_type="withdrawal",
                               subject_id="wd_early", wallet_id=wallet.id,
                               payload={"id": "wd_early"})
            if sqlite:
                await slow.commit()
            async with sessions() as s, s.begin():
                series = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                          "WHERE i < :many) SELECT i FROM n") if sqlite else \
                    "SELECT generate_series(1, :many) AS i"
                await s.execute(text(
                    "INSERT INTO outbox_events (type, subject_type, subject_id, wallet_id, "
                    "payload, created_at) SELECT 'withdrawal.created', 'withdrawal', "
                    f"'wd_bulk', :wallet, '{{}}', :at FROM ({series}) AS n"),
                    {"many": many, "wallet": wallet.id, "at": utcnow()})
            got: list[dict[str, Any]] = []
            sent_now = many + (1 if sqlite else 0)  # PostgreSQL: the early one waits
            while len(got) < sent_now:
                # A stall never ends; a busy machine (CI's two workers) may take more than
                # the usual 5 s for 1,000 events, which is not what this test is about.
                got += await take(min(1000, sent_now - len(got)), within=60)
            if not sqlite:
                await slow.commit()
                got += await take(1)
        finally:
            await slow.close()
        ids = [e["event_id"] for e in got]
        assert len(ids) == len(set(ids)) == many + 1 and early in ids


async def test_a_malformed_position_is_an_invalid_stream(make_app, sessions, world):
    """Found from outside: a Last-Event-ID (or ``last_event_id``) that is not a position was
    FastAPI's generic ``invalid-request`` (a pattern on the parameter ran before the cursor
    could say what a position is), where the API documents ``invalid-stream``. Every one is
    now the stream's own refusal, a control character in the query included."""
    await emit_for(sessions, "inv_a", "invoice.created")
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=world.merchant)
        _, key = await acc.create_api_key(s, owner_id=world.merchant, scopes=["wallet:read"])
    url = "/api/v1/events/stream"
    bad_values = ["abc", "9" * 23, "١٢", "3\n", "3\x1f", "1:2,", "-1", "9" * 5000]
    async with api_client(make_app()) as client:
        for params in ({"invoice_id": "inv_a"}, {"wallet_id": wallet.id}):
            for bad in bad_values:
                r = await client.get(url, params={**params, "last_event_id": bad},
                                     headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 422, (params, bad, r.text)
                assert r.json()["type"].endswith("/invalid-stream"), (bad, r.text)
                assert "Last-Event-ID" in r.json()["detail"]
                if "\n" in bad or "\x1f" in bad:
                    continue  # not a header value HTTP can carry
                r = await client.get(url, params=params, headers={
                    "Authorization": f"Bearer {key}", "Last-Event-ID": bad.encode()})
                assert r.status_code == 422, (params, bad, r.text)
                assert r.json()["type"].endswith("/invalid-stream"), (bad, r.text)
            # A NUL stays the edge's refusal of every parameter that holds one.
            r = await client.get(url, params={**params, "last_event_id": "3\x00"},
                                 headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 422
            assert r.json()["type"].endswith("/invalid-characters"), r.text


async def test_a_position_past_the_last_event_is_an_invalid_stream(make_app, sessions, world):
    """Found from outside: ``Last-Event-ID: 999999999999999999`` opened a stream that then
    stayed silent for good (every event was "already the client's"). A position past the
    last event there is, in the header or the query, on either kind of stream, is refused;
    the last event's own position is a position."""
    ids = await emit_for(sessions, "inv_a", "invoice.created")
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=world.merchant)
        _, key = await acc.create_api_key(s, owner_id=world.merchant, scopes=["wallet:read"])
    url = "/api/v1/events/stream"
    async with api_client(make_app()) as client:
        for params in ({"invoice_id": "inv_a"}, {"wallet_id": wallet.id}):
            for ahead in ("999999999999999999", f"{ids[-1]}:{ids[-1] + 5}"):
                r = await client.get(url, params={**params, "last_event_id": ahead},
                                     headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 422, (params, ahead, r.text)
                assert r.json()["type"].endswith("/invalid-stream"), r.text
                assert "past the last event" in r.json()["detail"]
                r = await client.get(url, params=params, headers={
                    "Authorization": f"Bearer {key}", "Last-Event-ID": ahead})
                assert r.status_code == 422, (params, ahead, r.text)
