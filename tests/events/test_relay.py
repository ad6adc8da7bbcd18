"""The event stream (issue 13 §5) against the real NATS JetStream server: the relay publishes
every outbox event once, in outbox order (so in order per aggregate), with ``Nats-Msg-Id`` =
the event id, on one subject per aggregate; a crash between a publish and recording it is
absorbed by JetStream's duplicate window; a restarted relay resumes from its cursor; one relay
at a time holds the lease; consumers replay from a sequence or follow with a durable consumer.

Each test has a stream and subject prefix of its own and deletes the stream at the end. NATS
is at ``SATVAULT_TEST_NATS_URL`` (default ``nats://127.0.0.1:4222``); when it cannot be
reached these tests fail if ``SATVAULT_TEST_REQUIRE_POSTGRES`` is set (CI: every service is
required there), and are skipped otherwise (a laptop without NATS)."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from typer.testing import CliRunner

from satvault.cli import app
from satvault.composition import open_sessions
from satvault.config import reset_settings_cache
from satvault.db import create_engine, sequence_fence
from satvault.events.errors import StreamUnavailable
from satvault.events.fanout import WebhookFanout
from satvault.events.jetstream import DurableConsumer, JetStream, StreamEvent, StreamSettings
from satvault.events.outbox import Event, emit, emit_many, notifier
from satvault.events.relay import EventRelay, cursor_position
from satvault.leases import Lease
from tests.events.conftest import NATS_URL, add_webhook
from tests.events.test_delivery import deliveries

runner = CliRunner()


async def emit_events(sessions, specs: list[tuple[str, str, str]]) -> list[int]:
    """(type, subject_type, subject_id) → their outbox ids, in one transaction."""
    async with sessions() as s, s.begin():
        return await emit_many(s, [Event(type=t, subject_type=st, subject_id=sid,
                                         payload={"id": sid, "n": i})
                                   for i, (t, st, sid) in enumerate(specs)])


MIXED = [("invoice.created", "invoice", "inv_a"), ("invoice.created", "invoice", "inv_b"),
         ("invoice.payment_received", "invoice", "inv_a"),
         ("wallet.balance_changed", "wallet", "w_1"),
         ("invoice.settled", "invoice", "inv_a"), ("invoice.expired", "invoice", "inv_b")]


async def everything(stream: JetStream) -> list[StreamEvent]:
    return await stream.replay(1, limit=10_000)


def make_relay(sessions, stream: JetStream, **kw) -> EventRelay:
    """A relay with a connection of its own (closing the relay closes it)."""
    return EventRelay(sessions, JetStream(stream.settings), **kw)


async def holding(engine, holder: str, ttl: float = 1.0) -> Lease:
    """The singleton workers' lease as ``holder`` sees it, taken if free (on SQLite: held)."""
    lease = Lease(engine, holder=holder, ttl=ttl)
    await lease.refresh()
    return lease


async def take_over(lease: Lease, within: float = 5.0) -> None:
    """Refresh ``lease`` until it is taken over (the holder stopped renewing)."""
    async with asyncio.timeout(within):
        while not await lease.refresh():
            await asyncio.sleep(0.1)


class Crash(Exception):
    pass


async def test_every_event_is_relayed_once_in_order_per_aggregate_with_its_msg_id(
        sessions, stream):
    ids = await emit_events(sessions, MIXED)
    relay = make_relay(sessions, stream, )
    assert await relay.tick() == 6
    got = await everything(stream)
    assert [e.seq for e in got] == [1, 2, 3, 4, 5, 6]
    assert [e.event_id for e in got] == ids  # the Nats-Msg-Id header: outbox order
    p = stream.settings.prefix
    assert [e.subject for e in got] == [f"{p}.invoice.inv_a", f"{p}.invoice.inv_b",
                                        f"{p}.invoice.inv_a", f"{p}.wallet.w_1",
                                        f"{p}.invoice.inv_a", f"{p}.invoice.inv_b"]
    assert [e.type for e in got] == [t for t, _, _ in MIXED]
    # the same envelope webhooks and live updates carry
    assert got[3].envelope["id"] == ids[3] and got[3].envelope["data"] == {"id": "w_1", "n": 3}
    assert set(got[0].envelope) == {"id", "type", "created_at", "data"}
    # one aggregate, filtered by its subject: its events in their order
    inv_a = await stream.replay(1, filter="invoice.inv_a")
    assert [e.type for e in inv_a] == ["invoice.created", "invoice.payment_received",
                                       "invoice.settled"]
    # nothing twice: a second pass has nothing to do
    assert await relay.tick() == 0
    assert await stream.last_seq() == 6
    async with sessions() as s:
        assert await cursor_position(s) == ids[-1]
    await relay.close()


async def test_a_crash_between_publish_and_record_is_absorbed_by_the_duplicate_window(
        engine, sessions, stream, monkeypatch):
    ids = await emit_events(sessions, MIXED[:4])
    crashed = make_relay(sessions, stream, lease=await holding(engine, "crashed"))

    async def crash(old: int, new: int) -> bool:
        raise Crash

    monkeypatch.setattr(crashed, "_advance", crash)
    with pytest.raises(Crash):
        await crashed.step()
    await crashed.stream.close()  # the process is gone
    assert await stream.last_seq() == 4  # published and acknowledged, but not recorded
    async with sessions() as s:
        assert await cursor_position(s) == 0

    # The dead process never gave its lease back: another takes over once it has run out.
    lease = await holding(engine, "restarted")
    restarted = make_relay(sessions, stream, lease=lease)
    if lease.enforced:  # PostgreSQL (on SQLite one process owns the database)
        assert (await restarted.step()).waiting
        await take_over(lease)
    done = await restarted.step()
    assert (done.published, done.duplicates, done.position) == (4, 4, ids[-1])
    # A consumer sees every event exactly once.
    seen: list[int] = []

    async def handle(ev: StreamEvent) -> None:
        seen.append(ev.event_id)

    consumer = DurableConsumer(stream, "once", handle)
    assert await consumer.step() == 4
    assert await consumer.step(timeout=0.2) == 0
    assert seen == ids
    await consumer.delete()
    await restarted.close()


async def test_a_restarted_relay_resumes_from_its_cursor(sessions, stream):
    first = await emit_events(sessions, MIXED[:3])
    relay = make_relay(sessions, stream, batch=2)
    assert await relay.tick() == 3  # two batches
    await relay.close()
    later = await emit_events(sessions, MIXED[3:])
    again = make_relay(sessions, stream)
    done = await again.step()
    assert (done.published, done.duplicates) == (3, 0)
    assert [e.event_id for e in await everything(stream)] == first + later
    await again.close()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_only_the_lease_holder_publishes(engine, sessions, stream):
    await emit_events(sessions, MIXED[:2])
    one_lease, two_lease = await holding(engine, "one"), await holding(engine, "two")
    assert one_lease.held and not two_lease.held
    one = make_relay(sessions, stream, lease=one_lease)
    two = make_relay(sessions, stream, lease=two_lease)
    assert (await one.step()).published == 2
    await emit_events(sessions, MIXED[2:3])
    assert (await two.step()).waiting  # one's lease is still good
    assert await stream.last_seq() == 2
    await one_lease.release()  # a clean shutdown hands over at once
    assert (await one.step()).waiting
    assert await two_lease.refresh()
    assert (await two.step()).published == 1
    assert await stream.last_seq() == 3
    for r in (one, two):
        await r.close()


class Paused:
    """A publish that stops (the process is SIGSTOPped) before the ``at``-th message leaves,
    until :meth:`resume`."""

    def __init__(self, relay: EventRelay, at: int) -> None:
        self.at, self.count = at, 0
        self.reached, self.go = asyncio.Event(), asyncio.Event()
        self._publish = relay.stream.publish
        relay.stream.publish = self.publish  # type: ignore[method-assign]

    async def publish(self, *args, **kwargs):
        self.count += 1
        if self.count == self.at:
            self.reached.set()
            await self.go.wait()
        return await self._publish(*args, **kwargs)

    def resume(self) -> None:
        self.go.set()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_paused_holder_is_taken_over_and_fenced_and_nothing_is_out_of_order(
        engine, sessions, stream):
    """Two relays on the shared lease. The holder is paused in the middle of a batch (after
    two of its messages, before the third); its lease runs out and the other takes over,
    republishes from the recorded cursor and records its own. When the paused one resumes,
    the message it was sending is a duplicate JetStream drops, it publishes nothing more,
    and its cursor write is refused by the fence. The stream holds every event once, in
    outbox order (so in order per aggregate)."""
    specs = [("invoice.created", "invoice", f"inv_{i % 3}") for i in range(9)]
    ids = await emit_events(sessions, specs)
    old_lease = await holding(engine, "old", ttl=1.0)
    new_lease = await holding(engine, "new", ttl=1.0)
    assert old_lease.held and not new_lease.held
    old = make_relay(sessions, stream, lease=old_lease)
    new = make_relay(sessions, stream, lease=new_lease)
    paused = Paused(old, at=3)
    stuck = asyncio.create_task(old.step())
    await asyncio.wait_for(paused.reached.wait(), 5)
    assert await stream.last_seq() == 2

    await take_over(new_lease)  # the old holder stopped renewing: epoch + 1
    assert new_lease.epoch == old_lease.epoch + 1
    done = await new.step()
    assert (done.published, done.duplicates, done.position) == (9, 2, ids[-1])
    await emit_events(sessions, specs[:1])  # and it carries on
    assert (await new.step()).published == 1

    paused.resume()  # the old holder wakes up mid-batch
    late = await asyncio.wait_for(stuck, 5)
    # two before the pause, the one in flight (a duplicate by now), then it stopped
    assert (late.waiting, late.published, late.duplicates, late.position) == (True, 3, 1, 0)
    assert not old_lease.held
    async with sessions() as s:
        assert await cursor_position(s) == ids[-1] + 1  # the new holder's, not overwritten
    got = await everything(stream)
    assert [e.event_id for e in got] == [*ids, ids[-1] + 1]  # once each, in outbox order
    for subject in {e.subject for e in got}:
        mine = [e.event_id for e in got if e.subject == subject]
        assert mine == sorted(set(mine))
    for r in (old, new):
        await r.close()


async def test_replay_from_a_sequence_and_the_tail_command(sessions, stream, monkeypatch,
                                                           db_url):
    ids = await emit_events(sessions, MIXED)
    relay = make_relay(sessions, stream, )
    await relay.tick()
    await relay.close()
    from_4 = await stream.replay(4)
    assert [(e.seq, e.event_id) for e in from_4] == list(zip([4, 5, 6], ids[3:], strict=True))
    assert await stream.replay(7) == []

    for name, value in (("SATVAULT_NATS_URL", NATS_URL), ("SATVAULT_DATABASE_URL", db_url),
                        ("SATVAULT_EVENT_STREAM", "nats"),
                        ("SATVAULT_NATS_STREAM", stream.settings.stream),
                        ("SATVAULT_NATS_SUBJECT_PREFIX", stream.settings.prefix)):
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    try:
        r = await asyncio.to_thread(runner.invoke, app, ["events", "tail", "--from-seq", "2",
                                                         "--subject", "invoice.>"])
        assert r.exit_code == 0, r.output
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        assert [(x["seq"], x["type"]) for x in lines] == [
            (2, "invoice.created"), (3, "invoice.payment_received"), (5, "invoice.settled"),
            (6, "invoice.expired")]
        assert lines[0]["event"]["id"] == lines[0]["event_id"] == ids[1]
        r = await asyncio.to_thread(runner.invoke, app, ["events", "relay-status"])
        assert r.exit_code == 0, r.output
        status = json.loads(r.stdout)
        assert (status["relayed_up_to_event"], status["stream_last_seq"]) == (ids[-1], 6)
        monkeypatch.setenv("SATVAULT_NATS_URL", "nats://127.0.0.1:1")
        reset_settings_cache()
        r = await asyncio.to_thread(runner.invoke, app, ["events", "tail"])
        assert r.exit_code == 1 and "cannot reach NATS" in json.loads(r.stdout)["error"]
    finally:
        reset_settings_cache()


async def test_a_durable_consumer_acks_after_handling_and_survives_a_restart(
        sessions, stream):
    ids = await emit_events(sessions, MIXED)
    relay = make_relay(sessions, stream, )
    await relay.tick()
    await relay.close()
    seen: list[int] = []
    fail_on = {ids[2]}

    async def handle(ev: StreamEvent) -> None:
        if ev.event_id in fail_on:
            fail_on.discard(ev.event_id)
            raise Crash
        seen.append(ev.event_id)

    consumer = DurableConsumer(stream, "hooks", handle, ack_wait=1.0)
    with pytest.raises(Crash):  # the third fails: told to come again, not acknowledged
        await consumer.step(batch=10)
    assert seen == ids[:2]
    # A new process: the server remembers what was acknowledged; the failed one comes again.
    again = DurableConsumer(stream, "hooks", handle, ack_wait=1.0)
    for _ in range(20):
        await again.step(batch=10, timeout=0.3)
        if len(seen) == 6:
            break
    assert seen == ids
    await again.delete()


async def test_the_stream_is_set_up_idempotently(stream):
    await stream.ensure_stream()
    await stream.ensure_stream()  # again: no error, no change
    info = await stream.js.stream_info(stream.settings.stream)
    assert info.config.subjects == [f"{stream.settings.prefix}.>"]
    assert info.config.duplicate_window == 60.0
    wider = JetStream(StreamSettings(url=NATS_URL, stream=stream.settings.stream,
                                     prefix=stream.settings.prefix, duplicate_window=120.0,
                                     max_age=600.0))
    async with wider:
        await wider.ensure_stream()  # a changed setting updates the stream
    info = await stream.js.stream_info(stream.settings.stream)
    assert info.config.duplicate_window == 120.0


async def test_an_unreachable_server_is_our_error():
    js = JetStream(StreamSettings(url="nats://127.0.0.1:1", stream="X", prefix="x",
                                  timeout=0.5))
    with pytest.raises(StreamUnavailable, match="cannot reach NATS"):
        await js.connect()


async def test_with_nats_the_webhook_deliveries_are_queued_from_the_stream(
        engine, sessions, world, receiver, clock, dispatchers, stream):
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/hook"))
    nats_sessions = open_sessions(engine, event_stream="nats")
    fired: list[int] = []
    unsubscribe = notifier.subscribe(lambda: fired.append(1))
    try:
        async with nats_sessions() as s, s.begin():
            ids = [await emit(s, type=t, subject_type="invoice", subject_id=f"inv_{i % 2}",
                              payload={"id": f"inv_{i % 2}", "n": i}, store_id=world.store)
                   for i, t in enumerate(["invoice.created", "invoice.created",
                                          "invoice.settled"])]
            await emit(s, type="wallet.balance_changed", subject_type="wallet",
                       subject_id="w_1", payload={})
    finally:
        unsubscribe()
    assert fired == [1]  # the commit hooks are the same
    assert await deliveries(sessions, hook) == []  # nothing queued by the transaction
    later_hook, _ = await add_webhook(sessions, world.store, receiver.url("/later"))

    relay = make_relay(sessions, stream, )
    assert await relay.tick() == 4
    await relay.close()
    fanout = WebhookFanout(sessions)
    consumer = DurableConsumer(JetStream(stream.settings), "webhooks", fanout)
    assert await consumer.step(timeout=0.3) == 4  # the wallet event is acknowledged too
    queued = await deliveries(sessions, hook)
    assert [d.event_id for d in queued] == ids and fanout.queued == 3
    assert json.loads(queued[2].request_body)["type"] == "invoice.settled"
    # a webhook created after the events hears none of them (as with the outbox fan-out)
    assert await deliveries(sessions, later_hook) == []
    # The whole stream handled again (a new durable consumer, a replay): nothing more.
    again = DurableConsumer(JetStream(stream.settings), "webhooks-again", fanout)
    assert await again.step(timeout=0.3) == 4
    assert len(await deliveries(sessions, hook)) == 3 and fanout.queued == 3
    # and the dispatcher sends them as ever, in outbox order
    assert await dispatchers().run_once() == 3
    assert receiver.event_ids("/hook") == ids
    for c in (consumer, again):
        await c.delete()
        await c.stream.close()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # the fence is PostgreSQL's
async def test_a_read_only_transaction_holds_the_relay_only_for_the_statement_it_runs(
        engine, sessions, stream):
    """Found checking the live streams' fix: every open transaction held the fence, so a
    backup's (``pg_dump`` reads in one transaction for as long as it runs) stalled the relay
    to NATS, the audit sealer and the streams' floor for the whole backup. A transaction
    that has written nothing can hold no numbered row but one its running statement is
    inserting: it holds the fence only while the statement it runs at the fence's start
    goes on. (SQLite needs no fence: ids commit in order.)"""
    relay = make_relay(sessions, stream, fence_timeout=0.3)
    async with engine.connect() as backup:
        await backup.execute(text("SELECT count(*) FROM outbox_events"))  # then idle in it
        await emit_events(sessions, MIXED[:2])
        step = await relay.step()
        assert (step.published, step.waiting) == (2, False)
        # A statement running at the fence's start holds it, until it ends.
        running = asyncio.create_task(backup.execute(text("SELECT pg_sleep(1.5)")))
        try:
            async with sessions() as s:
                for _ in range(100):
                    active = (await s.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                        "'SELECT pg_sleep(1.5)%' AND state = 'active'"))).scalar_one()
                    await s.rollback()
                    if active:
                        break
                    await asyncio.sleep(0.02)
                assert active
            await emit_events(sessions, MIXED[2:3])
            assert (await relay.step()).waiting
            await running
            step = await relay.step()  # the backup is idle in its transaction again
            assert (step.published, step.waiting) == (1, False)
        finally:
            running.cancel()
        await backup.rollback()
    await relay.close()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # the fence is PostgreSQL's
async def test_a_writer_the_fence_cannot_see_into_still_holds_it(engine, db_url):
    """Found reviewing the change above: ``pg_stat_activity`` hides another role's backend
    type and state from a role without ``pg_read_all_stats`` (a deployment with a role per
    kind of process), and the fence kept only sessions it saw as client backends: another
    role's open writer did not hold it at all (older than this stop). A client session the
    fence cannot see into may hold an id: it holds the fence for as long as it is open."""
    tag = secrets.token_hex(4)
    writer, reader = f"fence_w_{tag}", f"fence_r_{tag}"
    async with engine.connect() as c:
        for role in (writer, reader):
            await c.execute(text(f"CREATE ROLE {role} LOGIN"))
            await c.execute(text(f"GRANT pg_read_all_data, pg_write_all_data TO {role}"))
        await c.commit()
    as_writer = create_engine(make_url(db_url).set(username=writer).render_as_string(False))
    as_reader = create_engine(make_url(db_url).set(username=reader).render_as_string(False))
    fence = (("outbox_events", "id"),)
    try:
        reads = async_sessionmaker(as_reader, expire_on_commit=False)
        async with as_writer.connect() as w:
            await w.execute(text(
                "INSERT INTO outbox_events (type, subject_type, subject_id, payload, "
                "created_at) VALUES ('invoice.created', 'invoice', 'inv_x', '{}', now())"))
            assert await sequence_fence(reads, fence, timeout=0.3) is None  # it waits
            await w.commit()
        assert await sequence_fence(reads, fence, timeout=5) is not None
    finally:
        await as_writer.dispose()
        await as_reader.dispose()
        async with engine.connect() as c:
            for role in (writer, reader):
                await c.execute(text(f"DROP ROLE {role}"))
            await c.commit()


async def _publish_raw(stream: JetStream, subject: str, body: bytes,
                       headers: dict[str, str]) -> None:
    """Someone else publishing on the stream's subjects (what NATS permissions should stop)."""
    async with JetStream(stream.settings) as other:
        await other.ensure_stream()
        await other.js.publish(f"{stream.settings.prefix}.{subject}", body,
                               stream=stream.settings.stream, headers=headers)


async def _relay_then_fan_out(sessions, stream: JetStream, name: str, *, relayed: int,
                              handled: int) -> int:
    """Relay the outbox, then one step of a webhook fan-out consumer ``name``: how many
    messages it refused."""
    relay = make_relay(sessions, stream)
    assert await relay.tick() == relayed
    await relay.close()
    consumer = DurableConsumer(JetStream(stream.settings), name, WebhookFanout(sessions))
    try:
        assert await consumer.step(timeout=0.3) == handled
        return consumer.refused
    finally:
        await consumer.delete()
        await consumer.stream.close()


async def test_a_message_that_is_no_event_is_dropped_and_the_fanout_goes_on(
        engine, sessions, world, receiver, stream):
    """Found from outside: one message on the stream whose id header was no number (or whose
    body was no JSON object) stopped the webhook fan-out for every store until a person
    deleted it: the consumer raised on every fetch and never acknowledged it. It is now
    terminated and logged, and the events after it are handled."""
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/hook"))
    await _publish_raw(stream, "invoice.inv_poison", b"[1,2]", {"Nats-Msg-Id": "abc"})
    await _publish_raw(stream, "invoice.inv_poison2", b"not json", {"Nats-Msg-Id": "77"})
    nats_sessions = open_sessions(engine, event_stream="nats")
    async with nats_sessions() as s, s.begin():
        real = await emit(s, type="invoice.created", subject_type="invoice",
                          subject_id="inv_real", payload={"id": "inv_real"},
                          store_id=world.store)
    assert await _relay_then_fan_out(sessions, stream, "webhooks-poison", relayed=1,
                                     handled=1) == 2
    assert [d.event_id for d in await deliveries(sessions, hook)] == [real]


async def test_an_event_the_outbox_does_not_have_moves_no_position(
        engine, sessions, world, receiver, stream):
    """Found from outside: a message naming an event id the outbox did not have (a forged
    ``Nats-Msg-Id: 888888888`` on an invoice's subject) was acknowledged as handled and set
    the consumer's position for that subject, so every real event of the invoice after it
    was skipped until a restart. Such a message is refused (terminated, logged) and moves
    nothing."""
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/hook"))
    forged = json.dumps({"id": 888888888, "type": "invoice.settled", "created_at": "x",
                         "data": {"id": "inv_x"}}).encode()
    await _publish_raw(stream, "invoice.inv_x", forged,
                       {"Nats-Msg-Id": "888888888", "Satvault-Event-Type": "invoice.settled"})
    nats_sessions = open_sessions(engine, event_stream="nats")
    async with nats_sessions() as s, s.begin():
        real = [await emit(s, type=t, subject_type="invoice", subject_id="inv_x",
                           payload={"id": "inv_x"}, store_id=world.store)
                for t in ("invoice.created", "invoice.settled")]
    assert await _relay_then_fan_out(sessions, stream, "webhooks-forged", relayed=2,
                                     handled=2) == 1
    assert [d.event_id for d in await deliveries(sessions, hook)] == real


async def test_a_message_published_ahead_under_an_events_id_does_not_stand_for_it(
        engine, sessions, stream):
    """Found from outside: a message published by someone else under the id the next
    outbox event was to have (``Nats-Msg-Id: 9``) made JetStream drop the real event as a
    duplicate, and the relay counted it as published: the event never reached the stream. A
    duplicate whose stored message is not the event is refused: the relay stops before it,
    its cursor not past it, and says so."""
    ids = await emit_events(sessions, MIXED[:3])
    await _publish_raw(stream, "invoice.inv_b", b'{"forged": true}',
                       {"Nats-Msg-Id": str(ids[1])})
    relay = make_relay(sessions, stream)
    with pytest.raises(StreamUnavailable, match=f"event {ids[1]}"):
        await relay.step()
    async with sessions() as s:
        assert await cursor_position(s) == ids[0]  # the first went out; not the forged one
    await relay.close()
