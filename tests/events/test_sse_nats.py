"""Live updates from the event stream (``event_stream = "nats"``), against the real NATS
JetStream server and the app served by uvicorn: an event reaches a connected server-sent
event stream through JetStream (the process's one subscriber), with no read of the outbox
while the stream is live; another owner's events never reach it; a reconnect with
Last-Event-ID resumes without loss or repetition; invoice streams stay public."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import event

from satvault.accounts import service as acc
from satvault.composition import open_sessions
from satvault.config import Settings
from satvault.db import create_engine
from satvault.events import outbox_feed
from satvault.events.jetstream import JetStream
from satvault.events.outbox import emit
from satvault.events.relay import EventRelay
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import create_transfers
from satvault.web.app import create_app
from satvault.web.routes import streams
from tests.events.conftest import NATS_URL, serve
from tests.events.test_sse import emit_for, events
from tests.waiting import eventually

OUTBOX_READ = re.compile(r"^\s*SELECT\b.*\bFROM outbox_events\b", re.S | re.I)


class OutboxReads:
    """Counts the SELECTs on ``outbox_events`` an engine runs (the app's; the relay has its
    own engine)."""

    def __init__(self, engine) -> None:
        self.statements: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)
        self._engine = engine

    def _seen(self, conn, cursor, statement, *args) -> None:
        if OUTBOX_READ.search(statement):
            self.statements.append(statement)

    def remove(self) -> None:
        event.remove(self._engine.sync_engine, "before_cursor_execute", self._seen)


@asynccontextmanager
async def nats_app(engine, db_url, tmp_path, stream: JetStream) -> AsyncIterator[tuple]:
    settings = Settings(database_url=db_url, home=tmp_path, event_stream="nats",
                        nats_url=NATS_URL, nats_stream=stream.settings.stream,
                        nats_subject_prefix=stream.settings.prefix)
    app = create_app(settings, engine=engine, start_workers=False)
    relay_engine = create_engine(db_url, pool_size=2)  # the relay reads the outbox: not ours
    relay = EventRelay(open_sessions(relay_engine, event_stream="nats"),
                       JetStream(stream.settings))
    try:
        async with serve(app, lifespan=True) as base, httpx.AsyncClient(base_url=base) as client:
            yield app, client, relay
    finally:
        await relay.close()
        await relay_engine.dispose()


async def credit(sessions, platform, wallet, amount: int, ref: str) -> None:
    """A deposit credited to ``wallet`` (its commit writes ``wallet.balance_changed``)."""
    async with sessions() as s, s.begin():
        await create_transfers(s, [TransferSpec(ref, platform.external.id,
                                                wallet.ledger_account_id, amount, "BTC")])


async def following(app, listeners: int = 1) -> None:
    await eventually(lambda: app.state.live is not None and app.state.live.following
                     and len(app.state.live._listeners) == listeners)


async def test_a_credit_reaches_the_wallet_stream_through_jetstream_and_only_the_owners(
        engine, sessions, db_url, tmp_path, stream, monkeypatch):
    monkeypatch.setattr(outbox_feed, "POLL_SECONDS", 3600.0)  # an outbox poll would never come
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        alice = await acc.create_user(s, email="alice@example.com")
        shop = await acc.create_merchant(s, name="Shop")
        aw = await acc.ensure_wallet(s, owner_type="user", owner_id=alice.id)
        mw = await acc.ensure_wallet(s, owner_type="merchant", owner_id=shop.id)
        _, key = await acc.create_api_key(s, owner_id=alice.id, scopes=["wallet:read"])
    auth = {"Authorization": f"Bearer {key}"}
    params = {"wallet_id": aw.id}
    async with nats_app(engine, db_url, tmp_path, stream) as (app, client, relay):
        reads = OutboxReads(engine)
        async with events(client, params=params, headers=auth) as take:
            await following(app)
            # The stream's one read of what it missed, after subscribing; none from here on.
            await eventually(lambda: any("ORDER BY" in st for st in reads.statements))
            reads.statements.clear()
            try:
                await credit(sessions, platform, mw, 9_000, "shop-1")  # another owner's
                await credit(sessions, platform, aw, 5_000, "alice-1")
                assert await relay.tick() == 2  # both on the stream
                (got,) = await take(1)  # the shop's came first: it was filtered out
                assert got["event"] == "wallet.balance_changed"
                assert got["data"]["data"]["id"] == aw.id
                assert got["data"]["data"]["available_msat"] == 5_000
                first = got["event_id"]
                await credit(sessions, platform, aw, 1_000, "alice-2")
                await credit(sessions, platform, mw, 1_000, "shop-2")
                await relay.tick()
                (got,) = await take(1)
                assert got["data"]["data"]["available_msat"] == 6_000
                second = got["event_id"]
                assert reads.statements == []  # no outbox read while live: it came from JetStream
                # every message, once, to the one feed (the shop's, after Alice's, may still
                # be on its way)
                await eventually(lambda: app.state.live.received == 4)
            finally:
                reads.remove()
        await following(app, listeners=0)  # the dropped stream left the feed

        # Disconnected: two more credits of Alice's (and one of the shop's) happen.
        await credit(sessions, platform, aw, 100, "alice-3")
        await credit(sessions, platform, mw, 100, "shop-3")
        await credit(sessions, platform, aw, 10, "alice-4")
        await relay.tick()
        async with events(client, params=params,
                          headers={**auth, "Last-Event-ID": str(first)}) as take:
            got = await take(3)  # from the resume point: the second, and the two missed
            assert [g["data"]["data"]["available_msat"] for g in got] == [6_000, 6_100, 6_110]
            assert got[0]["event_id"] == second
            await following(app)
            await credit(sessions, platform, aw, 1, "alice-5")
            await relay.tick()
            (live,) = await take(1)  # then live again, nothing twice
            assert live["data"]["data"]["available_msat"] == 6_111
            assert live["event_id"] > got[-1]["event_id"]


async def test_the_invoice_stream_from_jetstream_is_public_and_resumable(
        engine, sessions, db_url, tmp_path, stream, monkeypatch):
    monkeypatch.setattr(outbox_feed, "POLL_SECONDS", 3600.0)
    first = await emit_for(sessions, "inv_a", "invoice.created", secret_note="order-42")
    async with nats_app(engine, db_url, tmp_path, stream) as (app, client, relay):
        async with events(client, params={"invoice_id": "inv_a"}) as take:
            (got,) = await take(1)  # from the outbox: it was there before the stream
            assert got["event_id"] == first[0]
            await following(app)
            await relay.tick()  # the stream now brings the same one again: not sent twice
            live = await emit_for(sessions, "inv_a", "invoice.payment_received",
                                  secret_note="order-42")
            await emit_for(sessions, "inv_b", "invoice.created")
            live += await emit_for(sessions, "inv_a", "invoice.settled")
            await relay.tick()
            got = await take(2)
            assert [g["event_id"] for g in got] == live
            assert [g["event"] for g in got] == ["invoice.payment_received", "invoice.settled"]
            # Public: the invoice's id and status, never the merchant's metadata.
            assert got[0]["data"]["data"] == {"id": "inv_a", "status": "payment_received"}
            assert app.state.live.received == 4
        async with events(client, params={"invoice_id": "inv_a"},
                          headers={"Last-Event-ID": str(first[0])}) as take:
            assert [g["event_id"] for g in await take(2)] == live


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_without_nats_a_stream_falls_back_to_the_outbox(
        engine, sessions, db_url, tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_feed, "POLL_SECONDS", 0.1)
    settings = Settings(database_url=db_url, home=tmp_path, event_stream="nats",
                        nats_url="nats://127.0.0.1:1")
    ids = await emit_for(sessions, "inv_a", "invoice.created")
    app = create_app(settings, engine=engine, start_workers=False)
    async with serve(app, lifespan=True) as base, httpx.AsyncClient(base_url=base) as client, \
            events(client, params={"invoice_id": "inv_a"}) as take:
        assert [g["event_id"] for g in await take(1)] == ids
        ids = await emit_for(sessions, "inv_a", "invoice.settled")
        assert [g["event_id"] for g in await take(1)] == ids


async def test_a_feed_whose_connection_was_given_up_is_revived_and_nothing_is_lost(
        engine, sessions, db_url, tmp_path, stream, monkeypatch):
    monkeypatch.setattr(outbox_feed, "POLL_SECONDS", 3600.0)
    monkeypatch.setattr(streams, "HEARTBEAT_SECONDS", 0.3)
    first = await emit_for(sessions, "inv_a", "invoice.created")
    async with nats_app(engine, db_url, tmp_path, stream) as (app, client, relay), \
            events(client, params={"invoice_id": "inv_a"}) as take:
        assert [g["event_id"] for g in await take(1)] == first
        await following(app)
        feed = app.state.live
        await feed.stream.close()  # the client gave the connection up (NATS was down)
        assert not feed.healthy
        missed = await emit_for(sessions, "inv_a", "invoice.payment_received")
        await relay.tick()  # published while the feed was not listening
        (got,) = await take(1)  # read from the outbox at the next heartbeat
        assert got["event_id"] == missed[0]
        assert feed.healthy  # and the feed follows the stream again
        received = feed.received
        live = await emit_for(sessions, "inv_a", "invoice.settled")
        await relay.tick()
        (got,) = await take(1)
        assert got["event_id"] == live[0]
        assert feed.received == received + 1  # through JetStream again


async def test_a_stream_from_now_over_jetstream_sends_an_event_whose_transaction_was_open(
        engine, sessions, db_url, tmp_path, stream, monkeypatch):
    """Found from outside: opened "from now" the stream skipped every event up to the
    highest committed, and JetStream then brought one below it whose transaction was open at
    the start (the relay publishes it once it commits, in id order): it was never sent. Now
    what counts as before the start is what was committed above the relay's position."""
    monkeypatch.setattr(outbox_feed, "POLL_SECONDS", 3600.0)
    async with sessions() as s, s.begin():
        shop = await acc.create_merchant(s, name="Shop")
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=shop.id)
        _, key = await acc.create_api_key(s, owner_id=shop.id, scopes=["wallet:read"])
    auth = {"Authorization": f"Bearer {key}"}
    sqlite = "sqlite" in db_url

    async def withdrawal(session, name: str) -> int:
        return await emit(session, type="withdrawal.created", subject_type="withdrawal",
                          subject_id=name, wallet_id=wallet.id, payload={"id": name})

    async with nats_app(engine, db_url, tmp_path, stream) as (app, client, relay):
        async with sessions() as s, s.begin():
            await withdrawal(s, "wd_before")
        await relay.tick()
        slow = sessions()
        await slow.begin()
        try:
            early = await withdrawal(slow, "wd_early")
            if sqlite:  # the open writer holds the lock: it commits before the stream opens
                await slow.commit()
            else:  # committed before the stream opens: not "from now"
                async with sessions() as s, s.begin():
                    assert await withdrawal(s, "wd_late") > early
            async with events(client, params={"wallet_id": wallet.id}, headers=auth) as take:
                await following(app)
                await slow.commit()
                async with sessions() as s, s.begin():
                    after = await withdrawal(s, "wd_after")
                await relay.tick()
                got = await take(1 if sqlite else 2)
                # The early one may come second: its commit may fall between the stream's
                # reads of the outbox at its start, and then it comes from JetStream.
                assert sorted(g["event_id"] for g in got) == \
                    ([] if sqlite else [early]) + [after]
        finally:
            await slow.close()
