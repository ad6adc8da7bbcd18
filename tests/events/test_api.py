"""The webhook API: create (secret shown once), list, change, delete, the delivery log and
redelivery; scopes; ownership (another store's or merchant's key gets 404); the SSRF guard
answering 422 problem+json."""

from __future__ import annotations

from satvault.events.models import Webhook
from satvault.events.outbox import emit
from tests.events.conftest import api_client

PUBLIC = "93.184.215.14"


async def test_webhook_lifecycle(make_app, world, sessions, fake_dns):
    fake_dns["hooks.acme.example"] = [PUBLIC]
    async with api_client(make_app("production")) as c:
        base = f"/api/v1/stores/{world.store}/webhooks"
        r = await c.post(base, headers=world.auth("store"), json={
            "url": "https://hooks.acme.example/satvault", "events": ["invoice.*",
                                                                     "withdrawal.failed"]})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["id"].startswith("whk_") and created["secret"].startswith("whsec_")
        assert created["events"] == ["invoice.*", "withdrawal.failed"] and created["enabled"]
        hook = created["id"]

        r = await c.post(base, headers=world.auth("merchant"), json={
            "url": "https://hooks.acme.example/two", "events": ["invoice.settled"],
            "secret": "my-own-secret-0123456789"})
        assert r.status_code == 201 and r.json()["secret"] == "my-own-secret-0123456789"

        listed = (await c.get(base, headers=world.auth("store_reader"))).json()
        assert [w["id"] for w in listed] == [hook, listed[1]["id"]]
        assert all("secret" not in w for w in listed)  # shown once, at creation
        one = await c.get(f"{base}/{hook}", headers=world.auth("admin"))
        assert one.status_code == 200 and "secret" not in one.json()

        r = await c.patch(f"{base}/{hook}", headers=world.auth("store"),
                          json={"enabled": False, "events": ["invoice.settled"]})
        assert r.status_code == 200
        assert r.json()["enabled"] is False and r.json()["events"] == ["invoice.settled"]

        assert (await c.delete(f"{base}/{hook}", headers=world.auth("store"))).status_code \
            == 204
        assert (await c.get(f"{base}/{hook}", headers=world.auth("store"))).status_code == 404
        assert len((await c.get(base, headers=world.auth("store"))).json()) == 1


async def test_refusals(make_app, world, fake_dns):
    fake_dns["internal.acme.example"] = ["10.0.0.8"]
    async with api_client(make_app("production")) as c:
        base = f"/api/v1/stores/{world.store}/webhooks"
        for url, slug in [("http://93.184.215.14/hook", "unsafe-url"),
                          ("https://127.0.0.1/hook", "unsafe-url"),
                          ("https://169.254.169.254/latest", "unsafe-url"),
                          ("https://[::1]/hook", "unsafe-url"),
                          ("https://internal.acme.example/hook", "unsafe-url"),
                          ("https://u:p@93.184.215.14/", "invalid-webhook")]:
            r = await c.post(base, headers=world.auth("store"),
                             json={"url": url, "events": ["invoice.*"]})
            assert r.status_code == 422, (url, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"].endswith(slug), (url, r.json())
        r = await c.post(base, headers=world.auth("store"),
                         json={"url": "https://93.184.215.14/", "events": ["invoice.paid"]})
        assert r.status_code == 422 and r.json()["type"].endswith("invalid-webhook")
        r = await c.post(base, headers=world.auth("store"), json={
            "url": "https://93.184.215.14/", "events": ["invoice.*"], "secret": "short"})
        assert r.status_code == 422
        # Scopes: a key that cannot manage webhooks is refused (403), a reader cannot write.
        for who in ("store_weak", "store_reader"):
            r = await c.post(base, headers=world.auth(who),
                             json={"url": "https://93.184.215.14/", "events": ["invoice.*"]})
            assert r.status_code == 403, who
        assert (await c.get(base, headers=world.auth("store_weak"))).status_code == 403
        assert (await c.get(base)).status_code == 401


async def test_other_owners_get_404(make_app, world, sessions):
    async with api_client(make_app()) as c:
        base = f"/api/v1/stores/{world.store}/webhooks"
        r = await c.post(base, headers=world.auth("store"),
                         json={"url": "http://127.0.0.1:9/hook", "events": ["invoice.*"]})
        assert r.status_code == 201, r.text
        hook = r.json()["id"]
        async with sessions() as s, s.begin():
            await emit(s, type="invoice.created", subject_type="invoice", subject_id="inv_1",
                       payload={"id": "inv_1"}, store_id=world.store)
        page = (await c.get(f"{base}/{hook}/deliveries", headers=world.auth("store"))).json()
        (delivery,) = page["items"]
        for who in ("foreign", "foreign_merchant", "sibling"):
            h = world.auth(who)
            assert (await c.get(base, headers=h)).status_code == 404, who
            assert (await c.get(f"{base}/{hook}", headers=h)).status_code == 404
            assert (await c.post(base, headers=h, json={
                "url": "http://127.0.0.1:9/x", "events": ["invoice.*"]})).status_code == 404
            assert (await c.patch(f"{base}/{hook}", headers=h,
                                  json={"enabled": False})).status_code == 404
            assert (await c.delete(f"{base}/{hook}", headers=h)).status_code == 404
            assert (await c.get(f"{base}/{hook}/deliveries", headers=h)).status_code == 404
            r = await c.post(f"/api/v1/webhook-deliveries/{delivery['id']}/redeliver",
                             headers=h)
            assert r.status_code == 404, who
        # A webhook id under another store's path is not found either.
        foreign = f"/api/v1/stores/{world.foreign_store}/webhooks/{hook}"
        assert (await c.get(foreign, headers=world.auth("foreign"))).status_code == 404
        assert (await c.get(f"{base}/{hook}", headers=world.auth("merchant"))).status_code \
            == 200
        assert (await c.post("/api/v1/webhook-deliveries/whd_nope/redeliver",
                             headers=world.auth("store"))).status_code == 404


async def test_delivery_log_and_redelivery(make_app, world, sessions, receiver, dispatchers):
    async with api_client(make_app()) as c:
        base = f"/api/v1/stores/{world.store}/webhooks"
        r = await c.post(base, headers=world.auth("store"),
                         json={"url": receiver.url("/log"), "events": ["invoice.created"]})
        hook = r.json()["id"]
        receiver.answer("/log", (500, None))
        async with sessions() as s, s.begin():
            for i in range(3):
                await emit(s, type="invoice.created", subject_type="invoice",
                           subject_id=f"inv_{i}", payload={"id": f"inv_{i}"},
                           store_id=world.store)
        d = dispatchers()
        assert await d.run_once() == 1  # event 1 fails; 2 and 3 wait behind it

        page = (await c.get(f"{base}/{hook}/deliveries?limit=2",
                            headers=world.auth("store_reader"))).json()
        assert [x["status"] for x in page["items"]] == ["pending", "pending"]
        older = (await c.get(f"{base}/{hook}/deliveries?before={page['next_before']}",
                             headers=world.auth("store"))).json()
        (failed,) = older["items"]
        assert older["next_before"] is None
        assert failed["status"] == "failed" and failed["last_status_code"] == 500
        (attempt,) = failed["attempt_log"]
        assert attempt["status_code"] == 500 and attempt["response_excerpt"] == "answer 500"
        signature = attempt["request_headers"]["Satvault-Signature"]
        assert signature.startswith("t=") and signature.endswith(",v1=(not logged)"), signature
        assert attempt["next_attempt_at"] is not None and attempt["duration_ms"] >= 0
        only_failed = (await c.get(f"{base}/{hook}/deliveries?status=failed",
                                   headers=world.auth("store"))).json()
        assert [x["id"] for x in only_failed["items"]] == [failed["id"]]

        r = await c.post(f"/api/v1/webhook-deliveries/{failed['id']}/redeliver",
                         headers=world.auth("merchant"))
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "pending" and r.json()["attempts"] == 0
        assert await d.run_once() == 3
        page = (await c.get(f"{base}/{hook}/deliveries", headers=world.auth("store"))).json()
        assert [x["status"] for x in page["items"]] == ["succeeded"] * 3
        assert len(receiver.calls["/log"]) == 4


async def test_webhook_bodies_are_strict(make_app, world, sessions, fake_dns):
    """Found from outside: ``{"enabled": "yes"}`` enabled a webhook, ``"10"``, ``true`` and
    ``1e3`` were overlaps in seconds, and ``{"secret": …}`` on a PATCH answered 200 and
    changed nothing (the client believed its new secret was in use). Booleans and integers
    are JSON's own, as everywhere else in the API, and a field the body does not have is
    refused, not ignored. Nothing changes."""
    fake_dns["hooks.acme.example"] = [PUBLIC]
    async with api_client(make_app("production")) as c:
        base = f"/api/v1/stores/{world.store}/webhooks"
        auth = world.auth("store")
        r = await c.post(base, headers=auth, json={
            "url": "https://hooks.acme.example/h", "events": ["invoice.*"]})
        assert r.status_code == 201, r.text
        hook = r.json()["id"]
        await c.patch(f"{base}/{hook}", headers=auth, json={"enabled": False})
        for body in ({"enabled": "yes"}, {"enabled": "true"}, {"enabled": 1},
                     {"secret": "whsec_x"}, {"enabled": True, "secret": "whsec_x"},
                     {"url": "https://hooks.acme.example/h", "events": ["invoice.*"],
                      "enabld": True}):
            r = await c.patch(f"{base}/{hook}", headers=auth, json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["type"].endswith("/invalid-request"), r.text
        assert (await c.get(f"{base}/{hook}", headers=auth)).json()["enabled"] is False
        for overlap in (True, "10", 1e3, 10.0, None):
            r = await c.post(f"/api/v1/webhooks/{hook}/rotate-secret", headers=auth,
                             json={"overlap_seconds": overlap})
            assert r.status_code == 422, (overlap, r.text)
        r = await c.post(f"/api/v1/webhooks/{hook}/rotate-secret", headers=auth,
                         json={"overlap_secs": 0})
        assert r.status_code == 422, r.text
        r = await c.post(base, headers=auth, json={
            "url": "https://hooks.acme.example/h2", "events": ["invoice.*"], "enabled": False})
        assert r.status_code == 422, r.text  # a hook is created enabled; not a field here
        assert len((await c.get(base, headers=auth)).json()) == 1
    async with sessions() as s:  # no rotation happened: the secret is the first one
        row = await s.get(Webhook, hook)
        assert row is not None and row.previous_secret is None
