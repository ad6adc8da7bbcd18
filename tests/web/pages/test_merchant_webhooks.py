"""The webhooks page: create (secret shown once), switch off, delete, the delivery log with
its attempts, redelivery producing a new attempt, CSRF, and another merchant's webhooks and
deliveries not found."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.events.models import Webhook, WebhookAttempt, WebhookDelivery
from tests.events.conftest import Receiver, add_webhook, dispatchers, receiver  # noqa: F401
from tests.events.test_delivery import emit_invoice
from tests.web.pages.conftest import People
from tests.web.pages.merchant_helpers import signed_in, token_of


async def test_create_switch_and_delete(browser: httpx.AsyncClient, people: People,
                                        sessions: async_sessionmaker[AsyncSession],
                                        receiver: Receiver) -> None:  # noqa: F811
    async with sessions() as s, s.begin():
        store = await acc.create_store(s, merchant_id=people.alice_merchant, name="Kiosk")
        _, api = await acc.create_api_key(s, owner_id=store.id, scopes=["stores:read"])
    await signed_in(browser)
    base = f"/dashboard/m/{people.alice_merchant}/webhooks"
    token = await token_of(browser, base)
    r = await browser.post(base, data={"csrf_token": token, "store_id": store.id,
                                       "url": "ftp://nope", "events": ["invoice.*"]})
    assert r.status_code == 422 and 'value="ftp://nope"' in r.text
    r = await browser.post(base, data={"csrf_token": token, "store_id": store.id,
                                       "url": receiver.url("/hook"),
                                       "events": ["invoice.settled", "withdrawal.*"]})
    assert r.status_code == 201, r.text
    async with sessions() as s:
        [hook] = (await s.execute(select(Webhook))).scalars().all()
    assert hook.secret in r.text
    listed = (await browser.get(f"/api/v1/stores/{store.id}/webhooks",
                                headers={"Authorization": f"Bearer {api}"})).json()
    assert [(w["id"], w["url"], w["events"], w["enabled"]) for w in listed] == \
        [(hook.id, receiver.url("/hook"), ["invoice.settled", "withdrawal.*"], True)]
    page = await browser.get(base)
    assert hook.id in page.text and hook.secret not in page.text

    assert (await browser.post(f"{base}/{hook.id}/switch", data={"enabled": "off"})
            ).status_code == 403
    r = await browser.post(f"{base}/{hook.id}/switch", data={"csrf_token": token,
                                                             "enabled": "off"})
    assert r.status_code == 303
    async with sessions() as s:
        assert (await s.get(Webhook, hook.id)).enabled is False  # type: ignore[union-attr]
    assert (await browser.post(f"{base}/{hook.id}/delete", data={})).status_code == 403
    r = await browser.post(f"{base}/{hook.id}/delete", data={"csrf_token": token})
    assert r.status_code == 303
    async with sessions() as s:
        assert await s.get(Webhook, hook.id) is None


async def test_delivery_log_and_redelivery(browser: httpx.AsyncClient, people: People,
                                           sessions: async_sessionmaker[AsyncSession],
                                           receiver: Receiver,  # noqa: F811
                                           dispatchers) -> None:  # noqa: F811
    async with sessions() as s, s.begin():
        store = await acc.create_store(s, merchant_id=people.alice_merchant, name="Kiosk")
        bobs = await acc.create_store(s, merchant_id=people.bob_merchant, name="B")
    hook, _ = await add_webhook(sessions, store.id, receiver.url("/flaky"))
    bob_hook, _ = await add_webhook(sessions, bobs.id, receiver.url("/bob"))
    receiver.answer("/flaky", (500, None))
    await emit_invoice(sessions, store.id, 1)
    await emit_invoice(sessions, bobs.id, 1, start=7)
    d = dispatchers(max_attempts=1)
    await d.run_once()
    async with sessions() as s:
        [delivery] = (await s.execute(select(WebhookDelivery).where(
            WebhookDelivery.webhook_id == hook))).scalars().all()
        [bob_delivery] = (await s.execute(select(WebhookDelivery).where(
            WebhookDelivery.webhook_id == bob_hook))).scalars().all()
    assert delivery.status == "dead"

    await signed_in(browser)
    base = f"/dashboard/m/{people.alice_merchant}/webhooks"
    log = await browser.get(f"{base}/{hook}")
    assert log.status_code == 200 and delivery.id in log.text and ">500<" in log.text
    token = await token_of(browser, base)
    again = f"{base}/{hook}/deliveries/{delivery.id}/redeliver"
    assert (await browser.post(again, data={})).status_code == 403
    r = await browser.post(again, data={"csrf_token": token})
    assert r.status_code == 303
    await d.run_once()
    async with sessions() as s:
        codes = [a.status_code for a in (await s.execute(select(WebhookAttempt).where(
            WebhookAttempt.delivery_id == delivery.id).order_by(WebhookAttempt.id))).scalars()]
        assert codes == [500, 200]
    log = await browser.get(f"{base}/{hook}")
    assert log.text.count("data-attempt") == 2 and ">succeeded<" in log.text

    # Bob's webhook and delivery: not found on every page and action, nothing queued.
    assert (await browser.get(f"{base}/{bob_hook}")).status_code == 404
    assert (await browser.get(f"/dashboard/m/{people.bob_merchant}/webhooks")).status_code == 404
    for path in (f"{base}/{bob_hook}/deliveries/{bob_delivery.id}/redeliver",
                 f"{base}/{hook}/deliveries/{bob_delivery.id}/redeliver",
                 f"{base}/{bob_hook}/switch", f"{base}/{bob_hook}/delete"):
        r = await browser.post(path, data={"csrf_token": token, "enabled": "off"})
        assert r.status_code == 404, path
    r = await browser.post(base, data={"csrf_token": token, "store_id": bobs.id,
                                       "url": receiver.url("/x"), "events": ["invoice.*"]})
    assert r.status_code == 404
    async with sessions() as s:
        bob_row = await s.get(Webhook, bob_hook)
        assert bob_row is not None and bob_row.enabled
        assert len((await s.execute(select(Webhook))).scalars().all()) == 2
        refreshed = await s.get(WebhookDelivery, bob_delivery.id)
        assert refreshed is not None and refreshed.attempts == bob_delivery.attempts


async def test_the_delivery_log_bounds_its_query_like_the_api(
        browser: httpx.AsyncClient, people: People,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    """``before`` is an event id, bounded to a 64-bit integer as the API's
    ``/deliveries?before=`` is, and ``status`` to the API's 12 characters: an unbounded
    ``before`` once went to the database as it was (a 5xx, an exception out of the app)."""
    async with sessions() as s, s.begin():
        store = await acc.create_store(s, merchant_id=people.alice_merchant, name="Kiosk")
    hook_id, _ = await add_webhook(sessions, store.id, "http://127.0.0.1:9/hook")
    await signed_in(browser)
    page = f"/dashboard/m/{people.alice_merchant}/webhooks/{hook_id}"
    assert (await browser.get(page, params={"before": str(2**63 - 1)})).status_code == 200
    for params in ({"before": str(2**63)}, {"before": str(10**30)}, {"before": "0"},
                   {"status": "x" * 13}):
        assert (await browser.get(page, params=params)).status_code == 422, params
