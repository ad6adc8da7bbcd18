"""Webhook delivery against a real local receiver: signed requests, retries with growing
backoff logged in the database, restart safety, order per endpoint, independence between
endpoints, redirects, timeouts, the SSRF check at send time, giving up, and redelivery."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import timedelta

import httpx
from sqlalchemy import select

from satvault.events.delivery import attempts_within, backoff_delay, redeliver
from satvault.events.models import Webhook, WebhookAttempt, WebhookDelivery
from satvault.events.outbox import emit
from satvault.kernel.retrying import retrying
from satvault.workers import webhook_worker
from tests.events.conftest import add_webhook
from tests.waiting import eventually


async def emit_invoice(sessions, store_id: str, n: int = 1, type_: str = "invoice.created",
                       start: int = 1) -> list[int]:
    ids = []
    async with sessions() as s, s.begin():
        for i in range(start, start + n):
            ids.append(await emit(s, type=type_, subject_type="invoice", subject_id=f"inv_{i}",
                                  payload={"id": f"inv_{i}", "status": "new", "seq": i},
                                  store_id=store_id))
    return ids


async def deliveries(sessions, webhook_id: str) -> list[WebhookDelivery]:
    async with sessions() as s:
        return list((await s.execute(select(WebhookDelivery).where(
            WebhookDelivery.webhook_id == webhook_id).order_by(WebhookDelivery.event_id)
        )).scalars())


async def attempt_log(sessions, delivery_id: str) -> list[WebhookAttempt]:
    async with sessions() as s:
        return list((await s.execute(select(WebhookAttempt).where(
            WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.id)
        )).scalars())


def test_backoff_schedule():
    delays = [backoff_delay(n, jitter=0) for n in range(1, 12)]
    assert delays[:4] == [10, 20, 40, 80] and delays[-1] == 3600
    assert backoff_delay(10_000, jitter=0) == 3600  # no overflow
    assert attempts_within(timedelta(hours=24)) == 33
    assert sum(backoff_delay(n, jitter=0) for n in range(1, 33)) / 3600 > 24


async def test_failures_are_retried_with_growing_backoff(sessions, world, receiver, clock,
                                                         dispatchers):
    hook, secret = await add_webhook(sessions, world.store, receiver.url("/hook"))
    receiver.answer("/hook", (500, None), (500, None))
    (event_id,) = await emit_invoice(sessions, world.store)
    d = dispatchers()

    assert await d.run_once() == 1
    assert await d.run_once() == 0  # not due yet
    clock.advance(11.5)  # 10 s ± 10 %
    assert await d.run_once() == 1
    clock.advance(10)
    assert await d.run_once() == 0
    clock.advance(12.5)  # 20 s ± 10 %
    assert await d.run_once() == 1

    (delivery,) = await deliveries(sessions, hook)
    assert delivery.status == "succeeded" and delivery.attempts == 3
    assert delivery.next_attempt_at is None and delivery.last_status_code == 200
    log = await attempt_log(sessions, delivery.id)
    assert [a.status_code for a in log] == [500, 500, 200]
    assert [a.attempt for a in log] == [1, 2, 3]
    gaps = [(a.next_attempt_at - a.started_at).total_seconds() for a in log[:2]]
    assert 9 <= gaps[0] <= 11.5 and 18 <= gaps[1] <= 22.5 and gaps[0] < gaps[1]
    assert log[2].next_attempt_at is None and log[0].response_excerpt == "answer 500"

    # What the receiver got: the envelope, signed, three times with the same event id.
    calls = receiver.calls["/hook"]
    assert len(calls) == 3
    for call in calls:
        assert call.json["id"] == event_id and call.json["type"] == "invoice.created"
        assert call.json["data"] == {"id": "inv_1", "status": "new", "seq": 1}
        assert call.headers["satvault-event-id"] == str(event_id)
        assert call.headers["satvault-event-type"] == "invoice.created"
        assert call.headers["satvault-delivery-id"] == delivery.id
        assert call.headers["content-type"] == "application/json"
        assert call.body == delivery.request_body.encode()
        fields = dict(p.split("=", 1) for p in call.headers["satvault-signature"].split(","))
        expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + call.body,
                            hashlib.sha256).hexdigest()
        assert hmac.compare_digest(fields["v1"], expected)
    stamps = [int(c.headers["satvault-signature"].split(",")[0][2:]) for c in calls]
    assert stamps[0] < stamps[1] < stamps[2]  # each attempt signs afresh
    # The log keeps the signature's time, never its values (found from outside: a key that
    # may only read the store read valid signatures there, to replay within 5 minutes).
    logged = json.loads(log[0].request_headers)["Satvault-Signature"]
    assert logged == calls[0].headers["satvault-signature"].split(",")[0] + ",v1=(not logged)"


async def test_a_restarted_dispatcher_picks_up_where_the_last_one_stopped(
        sessions, world, receiver, clock, dispatchers):
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/hook"))
    receiver.answer("/hook", (503, None))
    first_id, second_id = await emit_invoice(sessions, world.store, 2)
    first = dispatchers()
    assert await first.run_once() == 1
    await first.aclose()  # "the process stops"

    second = dispatchers()  # a new process: nothing but the database
    assert await second.run_once() == 0
    clock.advance(12)
    assert await second.run_once() == 2
    assert [d.status for d in await deliveries(sessions, hook)] == ["succeeded", "succeeded"]
    assert receiver.event_ids("/hook") == [first_id, first_id, second_id]

    # A process that claimed a delivery and died before sending: retried after the lease.
    (third_id,) = await emit_invoice(sessions, world.store, 1, start=3)
    dead = dispatchers()
    assert len(await retrying(sessions, lambda s: dead._claim(s, hook))) == 1
    other = dispatchers()
    assert await other.run_once() == 0  # invisible while the lease runs
    clock.advance(dead.lease.total_seconds() + 1)
    assert await other.run_once() == 1
    last = (await deliveries(sessions, hook))[-1]
    assert last.status == "succeeded" and last.attempts == 2
    assert receiver.event_ids("/hook") == [first_id, first_id, second_id, third_id]


async def test_events_reach_an_endpoint_in_outbox_order(sessions, world, receiver, clock,
                                                        dispatchers):
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/ordered"))
    ids = await emit_invoice(sessions, world.store, 5)
    receiver.answer("/ordered", (500, None))  # the first event fails once
    d = dispatchers()
    assert await d.run_once() == 1
    # While event 1 waits for its retry, events 2-5 wait behind it.
    assert receiver.event_ids("/ordered") == ids[:1]
    clock.advance(12)
    assert await d.run_once() == 5
    assert receiver.event_ids("/ordered") == [ids[0], *ids]
    # Two dispatchers at once (two server processes) still send each event once, in order.
    more = await emit_invoice(sessions, world.store, 5, start=6)
    a, b = dispatchers(), dispatchers()
    await asyncio.gather(a.run_once(), b.run_once(), a.run_once(), b.run_once())
    await asyncio.gather(a.wait_idle(), b.wait_idle())
    assert receiver.event_ids("/ordered") == [ids[0], *ids, *more]
    assert {d.status for d in await deliveries(sessions, hook)} == {"succeeded"}


async def test_a_slow_endpoint_does_not_delay_a_fast_one(sessions, world, receiver, clock,
                                                         dispatchers):
    await add_webhook(sessions, world.store, receiver.url("/slow"))
    await add_webhook(sessions, world.store, receiver.url("/fast"))
    slow = asyncio.Event()
    receiver.answer("/slow", (200, slow))  # answers only when the test says so
    ids = await emit_invoice(sessions, world.store, 5)
    d = dispatchers()
    started = time.monotonic()
    assert await d.step() == 2
    assert time.monotonic() - started < 1  # step starts the drains, it does not wait
    await eventually(lambda: len(receiver.calls["/fast"]) == 5)
    assert receiver.event_ids("/fast") == ids
    assert len(receiver.calls["/slow"]) == 1  # still busy with its first event
    assert receiver.calls["/slow"][0].finished == 0.0
    slow.set()
    await d.wait_idle()
    assert receiver.event_ids("/slow") == ids


async def test_one_merchants_slow_endpoints_take_only_their_share_of_the_drains(
        sessions, world, receiver, clock, dispatchers):
    """Found from outside: a merchant with 220 webhooks (11 stores) answering after 9.5 s
    held every one of the process's 200 drains, and another tenant's events waited 75 s. A
    merchant's endpoints, all its stores' together, drain at most
    ``max_endpoints_per_merchant`` at once; the others start at once beside them."""
    slow = asyncio.Event()
    for i in range(3):  # the merchant's two stores, three slow endpoints
        store = world.store if i % 2 else world.sibling_store
        await add_webhook(sessions, store, receiver.url(f"/slow{i}"))
        receiver.answer(f"/slow{i}", (200, slow))
    await add_webhook(sessions, world.foreign_store, receiver.url("/other"))
    slow_ids = (await emit_invoice(sessions, world.store, 2)
                + await emit_invoice(sessions, world.sibling_store, 2, start=3))
    other_ids = await emit_invoice(sessions, world.foreign_store, 2, start=5)
    d = dispatchers(max_endpoints=3, max_endpoints_per_merchant=2)
    assert await d.step() == 3  # two of the merchant's, and the other tenant's
    await eventually(lambda: receiver.event_ids("/other") == other_ids)
    busy = [p for p in ("/slow0", "/slow1", "/slow2") if receiver.calls[p]]
    assert len(busy) == 2, busy
    assert await d.step() == 0  # the merchant's share is taken, the third waits
    slow.set()
    await d.wait_idle()
    await d.run_once()  # the third, once one of the merchant's drains ended
    for path in ("/slow0", "/slow1", "/slow2"):
        store_ids = [i for i in slow_ids
                     if (i in slow_ids[:2]) == (path == "/slow1")]
        assert receiver.event_ids(path) == store_ids, path


async def test_redirects_are_not_followed_and_timeouts_fail(sessions, world, receiver, clock,
                                                            dispatchers):
    moved, _ = await add_webhook(sessions, world.store, receiver.url("/moved"))
    sleepy, _ = await add_webhook(sessions, world.store, receiver.url("/sleepy"))
    receiver.answer("/moved", (302, None, {"location": receiver.url("/elsewhere")}))
    silent = asyncio.Event()
    receiver.answer("/sleepy", (200, silent))  # no answer until the dispatcher gave up
    await emit_invoice(sessions, world.store)
    assert await dispatchers(timeout=0.3).run_once() == 2
    silent.set()
    (delivery,) = await deliveries(sessions, moved)
    assert delivery.status == "failed" and delivery.last_status_code == 302
    assert "redirect" in delivery.last_error
    assert receiver.calls["/elsewhere"] == []
    (delivery,) = await deliveries(sessions, sleepy)
    assert delivery.status == "failed" and delivery.last_status_code is None
    assert "no answer within 0.3 s" in delivery.last_error
    assert 250 <= delivery.last_duration_ms < 1000


async def test_the_url_is_checked_again_and_pinned_at_send_time(
        sessions, world, receiver, clock, dispatchers, fake_dns):
    port = receiver.base_url.rsplit(":", 1)[1]
    fake_dns["hooks.test"] = ["127.0.0.1"]
    hook, _ = await add_webhook(sessions, world.store, f"http://hooks.test:{port}/named")
    await emit_invoice(sessions, world.store, 2)
    d = dispatchers()
    assert await d.run_once() == 2
    # The connection went to the checked address, the name travelled in the Host header.
    assert [c.headers["host"] for c in receiver.calls["/named"]] == [f"hooks.test:{port}"] * 2

    # The name now points inside the network: refused before any byte is sent.
    fake_dns["hooks.test"] = ["10.0.0.5"]
    await emit_invoice(sessions, world.store, 1, start=3)
    assert await d.run_once() == 1
    last = (await deliveries(sessions, hook))[-1]
    assert last.status == "failed" and last.last_status_code is None
    assert "refused before sending" in last.last_error \
        and "does not resolve to a public address" in last.last_error
    assert "10.0.0.5" not in last.last_error  # the store's delivery log shows it (stop 35)
    assert len(receiver.calls["/named"]) == 2
    # Production refuses plain http (and loopback) at send time too.
    fake_dns["hooks.test"] = ["127.0.0.1"]
    clock.advance(12)
    assert await dispatchers(environment="production").run_once() == 1
    last = (await deliveries(sessions, hook))[-1]
    assert last.status == "failed" and "https" in last.last_error


async def test_giving_up_and_redelivering(sessions, world, receiver, clock, dispatchers):
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/flaky"))
    receiver.answer("/flaky", (500, None), (500, None))
    await emit_invoice(sessions, world.store, 2)
    d = dispatchers(max_attempts=2)
    assert await d.run_once() == 1
    clock.advance(12)
    assert await d.run_once() == 2  # event 1 dies, then event 2 goes out
    first, second = await deliveries(sessions, hook)
    assert first.status == "dead" and first.attempts == 2 and first.next_attempt_at is None
    assert second.status == "succeeded"

    async with sessions() as s, s.begin():
        again = await redeliver(s, first.id, now=clock())
        assert again.status == "pending" and again.attempts == 0
    assert await d.run_once() == 1
    first, _ = await deliveries(sessions, hook)
    assert first.status == "succeeded" and first.attempts == 1
    assert [a.status_code for a in await attempt_log(sessions, first.id)] == [500, 500, 200]
    # A succeeded delivery can be sent again too: the receiver sees the same event id.
    async with sessions() as s, s.begin():
        await redeliver(s, first.id, now=clock())
    assert await d.run_once() == 1
    ids = receiver.event_ids("/flaky")
    assert ids.count(first.event_id) == 4


async def test_disabled_and_deleted_webhooks_get_nothing(sessions, world, receiver, clock,
                                                         dispatchers):
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/off"))
    await emit_invoice(sessions, world.store)
    async with sessions() as s, s.begin():
        (await s.get(Webhook, hook)).enabled = False
    d = dispatchers()
    assert await d.run_once() == 0
    async with sessions() as s, s.begin():
        (await s.get(Webhook, hook)).enabled = True
    assert await d.run_once() == 1
    async with sessions() as s, s.begin():
        await s.delete(await s.get(Webhook, hook))
    assert await deliveries(sessions, hook) == []


async def test_https_goes_to_the_checked_address_with_the_name_as_sni(
        sessions, world, clock, dispatchers, fake_dns):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    fake_dns["hooks.example"] = ["93.184.215.14"]
    hook, _ = await add_webhook(sessions, world.store, "https://hooks.example/in?k=1",
                                environment="production")
    await emit_invoice(sessions, world.store)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        fake_dns["hooks.example"] = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
        assert await dispatchers(http=http, environment="production").run_once() == 1
    (request,) = seen
    assert str(request.url) == "https://93.184.215.14/in?k=1"
    assert request.headers["host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"
    assert [d.status for d in await deliveries(sessions, hook)] == ["succeeded"]


async def test_a_wider_window_sends_an_endpoints_deliveries_concurrently(
        sessions, world, receiver, clock, dispatchers):
    hook, _ = await add_webhook(sessions, world.store, receiver.url("/wide"))
    held = asyncio.Event()
    receiver.answer("/wide", (200, held), (200, held), (200, held))
    await emit_invoice(sessions, world.store, 5)
    run = asyncio.create_task(dispatchers(max_concurrency_per_endpoint=3).run_once())
    # The first three are sent at once and wait together for their answers.
    await eventually(lambda: len(receiver.calls["/wide"]) == 3)
    held.set()
    assert await run == 5
    # Never more than the window in flight: judged from the receiver's own arrival and finish
    # times (had the window been wider, the fourth would have arrived while three waited).
    calls = receiver.calls["/wide"]
    in_flight = [sum(1 for o in calls if o.arrived < c.finished and o.finished > c.arrived)
                 for c in calls]
    assert max(in_flight) == 3
    assert {d.status for d in await deliveries(sessions, hook)} == {"succeeded"}


async def test_the_worker_wakes_when_an_event_commits(sessions, world, receiver, clock,
                                                      dispatchers):
    await add_webhook(sessions, world.store, receiver.url("/woken"))
    worker = webhook_worker(dispatchers(), interval=60)  # only a wake-up can make it run
    worker.start()
    try:
        await eventually(lambda: worker.runs >= 1)  # its first tick: nothing to do
        ids = await emit_invoice(sessions, world.store, 2)
        await eventually(lambda: len(receiver.calls["/woken"]) == 2, timeout=3)
        assert receiver.event_ids("/woken") == ids
    finally:
        await worker.stop()


async def test_whatever_an_endpoint_answers_is_logged_safely(sessions, world, receiver, clock,
                                                            dispatchers):
    """Found from outside: the log's excerpt of the answer was decoded text, so an endpoint
    answering NUL bytes made the attempt's row unwritable on PostgreSQL (the delivery's
    outcome never recorded), and a compressed answer was inflated before the 1 KiB cut (a
    small body could expand to megabytes in memory). The answer is asked for uncompressed,
    read raw, cut at 1 KiB and stored as text a database can hold."""
    import gzip

    hook, _ = await add_webhook(sessions, world.store, receiver.url("/hook"))
    bomb = gzip.compress(b"\0" * 20_000_000)  # ~20 KB that inflates to 20 MB of NULs
    receiver.answer("/hook", (500, None, {}, b"bad\0answer" * 200),
                    (200, None, {"content-encoding": "gzip"}, bomb))
    await emit_invoice(sessions, world.store)
    d = dispatchers()
    assert await d.run_once() == 1
    clock.advance(12)
    assert await d.run_once() == 1
    (delivery,) = await deliveries(sessions, hook)
    assert delivery.status == "succeeded" and delivery.attempts == 2
    first, second = await attempt_log(sessions, delivery.id)
    assert first.status_code == 500 and first.response_excerpt is not None
    assert "\0" not in first.response_excerpt and first.response_excerpt.startswith("bad")
    assert second.status_code == 200 and "\0" not in (second.response_excerpt or "")
    assert len(second.response_excerpt or "") <= 1024
    assert all(c.headers.get("accept-encoding") == "identity"
               for c in receiver.calls["/hook"])
