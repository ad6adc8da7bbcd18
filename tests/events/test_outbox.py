"""The outbox: events and their webhook deliveries live and die with the caller's transaction
(and the in-process notifier fires on its commit only); the fan-out honours subscriptions
(wildcards included), stores and the enabled switch."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import bindparam, func, insert, select

from satvault.db import utcnow
from satvault.events.catalog import matches, normalise_subscription
from satvault.events.errors import InvalidWebhook
from satvault.events.models import OutboxEvent, Webhook, WebhookDelivery
from satvault.events.outbox import Event, emit, emit_many, notifier, with_deferred_events
from tests.events.conftest import add_webhook
from tests.statements import count_statements


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


async def test_deferred_events_keep_their_order_and_never_outlive_a_rollback(sessions, world):
    """``emit_many(defer=True)`` (an internal payment's withdrawal events): the rows wait for
    the unit of work's last statement, or for the commit, yet the ids follow the order in
    which the events were emitted, interleaved with events written at once; a rollback takes
    the deferred rows with it, and a deferred event with a store whose webhooks need a
    delivery is written at once (a delivery carries the event's id)."""
    def ev(subject: str, store: str | None = None) -> Event:
        return Event(type="invoice.created", subject_type="invoice", subject_id=subject,
                     payload={"id": subject}, store_id=store)

    with pytest.raises(Boom):
        async with sessions() as s, s.begin():
            assert await emit_many(s, [ev("inv_lost")], defer=True) == []
            raise Boom
    async with sessions() as s, s.begin():
        await emit_many(s, [ev("inv_a")])
        assert await emit_many(s, [ev("inv_b"), ev("inv_c")], defer=True) == []
        await emit_many(s, [ev("inv_d")])  # written at once: the deferred ones go first
        await emit_many(s, [ev("inv_e")], defer=True)  # left for the commit
    async with sessions() as s:
        order = (await s.execute(select(OutboxEvent.subject_id)
                                 .order_by(OutboxEvent.id))).scalars().all()
    assert order == ["inv_a", "inv_b", "inv_c", "inv_d", "inv_e"]

    await add_webhook(sessions, world.store, "http://127.0.0.1:9/hook")
    async with sessions() as s, s.begin():
        (event_id,) = await emit_many(s, [ev("inv_f", world.store)], defer=True)
    async with sessions() as s:
        delivery = (await s.execute(select(WebhookDelivery))).scalar_one()
    assert delivery.event_id == event_id


async def test_deferred_events_ride_on_the_last_statement(sessions, world):
    """On PostgreSQL the deferred rows are written by the statement
    :func:`with_deferred_events` builds (a data-modifying WITH), so the commit adds none;
    elsewhere the statement is returned unchanged and the rows are written at commit."""
    statement = insert(Webhook.__table__).values(
        id=bindparam("w_id"), store_id=bindparam("w_store"), url=bindparam("w_url"),
        events=bindparam("w_events"), secret=bindparam("w_secret"),
        enabled=bindparam("w_enabled"), created_at=bindparam("w_at"))
    params = {"w_id": "wh_ride", "w_store": world.store, "w_url": "http://127.0.0.1:9/x",
              "w_events": "invoice.*", "w_secret": "s" * 32, "w_enabled": False,
              "w_at": utcnow()}
    engine = sessions.kw["bind"]
    postgres = engine.dialect.name == "postgresql"
    with count_statements(engine) as n:
        async with sessions() as s, s.begin():
            await emit_many(s, [Event(type="invoice.created", subject_type="invoice",
                                      subject_id=f"inv_{i}", payload={}) for i in range(3)],
                            defer=True)
            combined, values = with_deferred_events(s, statement, params)
            assert (combined is statement) is not postgres
            await s.execute(combined, values)
    inserts = [q for q in n.sql if q.lstrip().upper().startswith(("INSERT", "WITH"))]
    assert len(inserts) == (1 if postgres else 2), str(n)
    async with sessions() as s:
        subjects = (await s.execute(select(OutboxEvent.subject_id)
                                    .order_by(OutboxEvent.id))).scalars().all()
        assert await s.get(Webhook, "wh_ride") is not None
    assert subjects == ["inv_0", "inv_1", "inv_2"]
