"""With ``event_stream = "nats"`` the webhook fan-out runs after the event's transaction; it
decided from the webhook's switch as it was then, not when the event was emitted (found from
outside, stop 32): an event emitted while a webhook was off reached it once back on, and one
emitted while it was on was lost if it was switched off meanwhile. It now reads the switch
as it was at the event (``switched_at``, migration 0073), as the outbox mode does."""

from __future__ import annotations

from satvault.composition import open_sessions
from satvault.events.fanout import WebhookFanout
from satvault.events.jetstream import DurableConsumer, JetStream
from satvault.events.models import Webhook
from satvault.events.outbox import emit
from satvault.events.relay import EventRelay
from satvault.events.service import update_webhook
from tests.events.conftest import add_webhook
from tests.events.test_delivery import deliveries


async def _set_enabled(sessions, clock, hook: str, enabled: bool) -> None:
    clock.advance(seconds=1)  # after what came before, as a person's click would be
    async with sessions() as s, s.begin():
        await update_webhook(s, webhook=await s.get(Webhook, hook), enabled=enabled)
    clock.advance(seconds=1)


async def _relay_and_fan_out(sessions, stream) -> None:
    relay = EventRelay(sessions, JetStream(stream.settings))
    await relay.tick()
    await relay.close()
    consumer = DurableConsumer(JetStream(stream.settings), "webhooks", WebhookFanout(sessions))
    await consumer.step(timeout=0.3)
    await consumer.delete()
    await consumer.stream.close()


async def test_nats_fanout_queues_an_event_emitted_while_the_webhook_was_disabled(
        engine, sessions, world, receiver, clock, stream):
    """api.md: "A disabled webhook gets no deliveries for the events emitted while it is
    off", switched on again before the fan-out ran or not."""
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/hook"))
    clock.advance(seconds=1)
    await _set_enabled(sessions, clock, hook, False)
    nats_sessions = open_sessions(engine, event_stream="nats")
    async with nats_sessions() as s, s.begin():
        await emit(s, type="invoice.created", subject_type="invoice", subject_id="inv_off",
                   payload={"id": "inv_off"}, store_id=world.store)
    await _set_enabled(sessions, clock, hook, True)  # switched on again before the fan-out ran
    await _relay_and_fan_out(sessions, stream)
    assert await deliveries(sessions, hook) == []


async def test_nats_fanout_loses_an_event_when_the_webhook_is_briefly_disabled(
        engine, sessions, world, receiver, clock, stream):
    """Emitted while the webhook was enabled: its delivery is queued and "waits until it is
    enabled again", also when it was switched off before the fan-out handled the message
    (NATS down, the fan-out worker behind)."""
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/hook"))
    clock.advance(seconds=1)
    nats_sessions = open_sessions(engine, event_stream="nats")
    async with nats_sessions() as s, s.begin():
        await emit(s, type="invoice.settled", subject_type="invoice", subject_id="inv_on",
                   payload={"id": "inv_on"}, store_id=world.store)
    await _set_enabled(sessions, clock, hook, False)
    await _relay_and_fan_out(sessions, stream)
    await _set_enabled(sessions, clock, hook, True)
    assert [d.event_type for d in await deliveries(sessions, hook)] == ["invoice.settled"]


async def test_the_outbox_mode_keeps_both_rules(sessions, world, receiver, clock):
    """The same two sequences in the embedded (outbox) mode."""
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/hook"))
    clock.advance(seconds=1)
    await _set_enabled(sessions, clock, hook, False)
    async with sessions() as s, s.begin():
        await emit(s, type="invoice.created", subject_type="invoice", subject_id="inv_off",
                   payload={"id": "inv_off"}, store_id=world.store)
    await _set_enabled(sessions, clock, hook, True)
    async with sessions() as s, s.begin():
        await emit(s, type="invoice.settled", subject_type="invoice", subject_id="inv_on",
                   payload={"id": "inv_on"}, store_id=world.store)
    await _set_enabled(sessions, clock, hook, False)
    await _set_enabled(sessions, clock, hook, True)
    assert [d.event_type for d in await deliveries(sessions, hook)] == ["invoice.settled"]


async def test_nats_fanout_reads_the_switch_as_it_was_however_often_it_moved_since(
        engine, sessions, world, receiver, clock, stream):
    """Found from outside: the fan-out knew only the last switch, so a webhook switched off
    and on again after an event (on at the event) got nothing, and one switched on and off
    again (off at the event) got a delivery. Every switch is kept (migration 0079): the
    fan-out reads the one in force when the event was emitted."""
    on_then, _ = await add_webhook(sessions, world.store, receiver.url("/on"))
    off_then, _ = await add_webhook(sessions, world.store, receiver.url("/off"))
    steady, _ = await add_webhook(sessions, world.store, receiver.url("/steady"))
    clock.advance(seconds=1)
    await _set_enabled(sessions, clock, off_then, False)
    nats_sessions = open_sessions(engine, event_stream="nats")
    async with nats_sessions() as s, s.begin():
        await emit(s, type="invoice.created", subject_type="invoice", subject_id="inv_t",
                   payload={"id": "inv_t"}, store_id=world.store)
    for enabled in (False, True):
        await _set_enabled(sessions, clock, on_then, enabled)
    for enabled in (True, False):
        await _set_enabled(sessions, clock, off_then, enabled)
    await _relay_and_fan_out(sessions, stream)
    assert [d.event_type for d in await deliveries(sessions, on_then)] == ["invoice.created"]
    assert await deliveries(sessions, off_then) == []
    assert [d.event_type for d in await deliveries(sessions, steady)] == ["invoice.created"]


def test_migration_0079_gives_older_webhooks_the_history_their_last_switch_implies(tmp_path):
    """A webhook made before 0079: its state at creation (the opposite of now if it was
    switched since) and its last switch, as 0073's rule read them; the way back works."""
    import sqlite3

    from alembic import command

    from satvault.migrate import alembic_config, upgrade

    path = tmp_path / "m.db"
    url = f"sqlite:///{path}"
    upgrade(url, "0078_screening_confusables")
    made, moved = "2026-12-01 00:00:00.000000", "2026-12-02 00:00:00.000000"
    with sqlite3.connect(path) as db:
        for hook, enabled, switched in (("whk_never", 1, None), ("whk_off", 0, moved),
                                        ("whk_back", 1, moved)):
            db.execute("INSERT INTO webhooks (id, store_id, url, events, secret, enabled, "
                       "created_at, switched_at) VALUES (?, 'sto_a', 'https://x.test', "
                       "'invoice.*', 'whsec_0123456789abcdef', ?, ?, ?)",
                       (hook, enabled, made, switched))
    upgrade(url)
    with sqlite3.connect(path) as db:
        got = sorted(db.execute("SELECT webhook_id, enabled, at FROM webhook_switches"))
    assert got == [("whk_back", 0, made), ("whk_back", 1, moved), ("whk_never", 1, made),
                   ("whk_off", 0, moved), ("whk_off", 1, made)]
    command.downgrade(alembic_config(url), "0078_screening_confusables")
    upgrade(url)
