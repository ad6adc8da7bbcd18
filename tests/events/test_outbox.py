"""The outbox: events and their webhook deliveries live and die with the caller's transaction
(and the in-process notifier fires on its commit only); the fan-out honours subscriptions
(wildcards included), stores and the enabled switch."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from satvault.events.catalog import matches, normalise_subscription
from satvault.events.errors import InvalidWebhook
from satvault.events.models import OutboxEvent, Webhook, WebhookDelivery
from satvault.events.outbox import emit, notifier
from tests.events.conftest import add_webhook


async def counts(sessions) -> tuple[int, int]:
    async with sessions() as s:
        events = (await s.execute(select(func.count()).select_from(OutboxEvent))).scalar_one()
        deliveries = (await s.execute(
            select(func.count()).select_from(WebhookDelivery))).scalar_one()
    return events, deliveries


class Boom(Exception):
    pass


async def test_emit_is_part_of_the_callers_transaction(sessions, world):
    await add_webhook(sessions, world.store, "http://127.0.0.1:9/hook")
    fired: list[int] = []
    unsubscribe = notifier.subscribe(lambda: fired.append(1))
    try:
        with pytest.raises(Boom):
            async with sessions() as s, s.begin():
                await emit(s, type="invoice.created", subject_type="invoice",
                           subject_id="inv_1", payload={"id": "inv_1", "status": "new"},
                           store_id=world.store)
                raise Boom  # the change failed: its event must not survive it
        assert await counts(sessions) == (0, 0)
        async with sessions() as s, s.begin():
            pass  # a later commit that emitted nothing does not notify either
        assert fired == []

        async with sessions() as s, s.begin():
            event_id = await emit(s, type="invoice.created", subject_type="invoice",
                                  subject_id="inv_1", payload={"id": "inv_1", "status": "new"},
                                  store_id=world.store)
            assert fired == []  # not before the commit
        assert fired == [1]
    finally:
        unsubscribe()
    assert await counts(sessions) == (1, 1)
    async with sessions() as s:
        delivery = (await s.execute(select(WebhookDelivery))).scalar_one()
        event = await s.get(OutboxEvent, event_id)
    assert delivery.status == "pending" and delivery.attempts == 0
    assert delivery.next_attempt_at == event.created_at
    body = json.loads(delivery.request_body)
    assert body == {"id": event_id, "type": "invoice.created",
                    "created_at": event.created_at.isoformat(),
                    "data": {"id": "inv_1", "status": "new"}}


async def test_fan_out_follows_subscriptions_stores_and_the_switch(sessions, world):
    everything, _ = await add_webhook(sessions, world.store, "http://127.0.0.1:9/a",
                                      ["invoice.*", "withdrawal.*"])
    settled, _ = await add_webhook(sessions, world.store, "http://127.0.0.1:9/b",
                                   ["invoice.settled"])
    withdrawals, _ = await add_webhook(sessions, world.store, "http://127.0.0.1:9/c",
                                       ["withdrawal.*"])
    disabled, _ = await add_webhook(sessions, world.store, "http://127.0.0.1:9/d",
                                    ["invoice.*"])
    elsewhere, _ = await add_webhook(sessions, world.foreign_store, "http://127.0.0.1:9/e",
                                     ["invoice.*"])
    async with sessions() as s, s.begin():
        (await s.get(Webhook, disabled)).enabled = False
    async with sessions() as s, s.begin():
        for type_ in ("invoice.created", "invoice.settled"):
            await emit(s, type=type_, subject_type="invoice", subject_id="inv_1",
                       payload={"id": "inv_1"}, store_id=world.store)
        await emit(s, type="withdrawal.confirmed", subject_type="withdrawal",
                   subject_id="wd_1", payload={"id": "wd_1"}, store_id=world.store,
                   wallet_id="wal_1")
        await emit(s, type="invoice.created", subject_type="invoice", subject_id="inv_2",
                   payload={"id": "inv_2"})  # no store: no webhook
    async with sessions() as s:
        rows = (await s.execute(select(WebhookDelivery.webhook_id, WebhookDelivery.event_type)
                                .order_by(WebhookDelivery.event_id))).all()
    got: dict[str, list[str]] = {}
    for webhook_id, type_ in rows:
        got.setdefault(webhook_id, []).append(type_)
    assert got == {
        everything: ["invoice.created", "invoice.settled", "withdrawal.confirmed"],
        settled: ["invoice.settled"],
        withdrawals: ["withdrawal.confirmed"],
    }
    assert elsewhere not in got


async def test_emit_checks_its_arguments_and_routes_wallet_events(sessions):
    async with sessions() as s, s.begin():
        with pytest.raises(ValueError, match="unknown event type"):
            await emit(s, type="invoice.paid", subject_type="invoice", subject_id="i",
                       payload={})
        with pytest.raises(ValueError, match="subject"):
            await emit(s, type="invoice.created", subject_type="wallet", subject_id="i",
                       payload={})
        with pytest.raises(TypeError, match="set"):
            await emit(s, type="invoice.created", subject_type="invoice", subject_id="i",
                       payload={"bad": {1, 2}})
        event_id = await emit(s, type="wallet.balance_changed", subject_type="wallet",
                              subject_id="wal_9", payload={"available_msat": 5})
        event = await s.get(OutboxEvent, event_id)
        assert event.wallet_id == "wal_9" and event.store_id is None


def test_subscriptions_are_checked_and_normalised():
    assert normalise_subscription(["invoice.settled", "invoice.*", " withdrawal.failed "]) \
        == ["invoice.*", "withdrawal.failed"]
    for bad in ([], ["invoice.paid"], ["*"], ["wallet.balance_changed"], ["wallet.*"]):
        with pytest.raises(InvalidWebhook):
            normalise_subscription(bad)
    assert matches(["withdrawal.*"], "withdrawal.broadcast")
    assert not matches(["withdrawal.*"], "invoice.settled")
    assert matches(["invoice.expired"], "invoice.expired")
    assert not matches(["invoice.expired"], "invoice.expired_late")
