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
