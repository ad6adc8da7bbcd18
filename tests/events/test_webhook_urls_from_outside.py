"""Webhook URLs an outside review found answered with a 500 or let past the limits (stop 32):
a host the IDNA codec cannot encode, a URL that percent-encoding makes longer than the
column, and creations racing past the 20 webhooks a store may have. Each is now a 422 and
changes nothing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from satvault.events.models import Webhook
from tests.events.conftest import api_client

BAD_HOSTS = ["https://a..example.com/hook", "https://.example.com/hook",
             "https://" + "a" * 64 + ".example.com/hook"]


async def hooks(sessions, store: str) -> int:
    async with sessions() as s:
        return (await s.execute(select(func.count()).select_from(Webhook).where(
            Webhook.store_id == store))).scalar_one()


@pytest.mark.parametrize("url", BAD_HOSTS)
async def test_a_host_that_cannot_be_encoded_is_a_422(make_app, world, sessions, fake_dns,
                                                      url):
    fake_dns["hooks.acme.example"] = ["93.184.215.14"]
    async with api_client(make_app("production")) as c:
        base = f"/api/v1/stores/{world.store}/webhooks"
        r = await c.post(base, headers=world.auth("store"),
                         json={"url": url, "events": ["invoice.*"]})
        assert r.status_code == 422 and r.json()["type"].endswith("/invalid-webhook"), r.text
        assert "not a valid host name" in r.json()["detail"]
        ok = await c.post(base, headers=world.auth("store"),
                          json={"url": "https://hooks.acme.example/x", "events": ["invoice.*"]})
        assert ok.status_code == 201, ok.text
        r = await c.patch(f"{base}/{ok.json()['id']}", headers=world.auth("store"),
                          json={"url": url})
        assert r.status_code == 422, r.text
        got = await c.get(f"{base}/{ok.json()['id']}", headers=world.auth("store"))
        assert got.json()["url"] == "https://hooks.acme.example/x"
    assert await hooks(sessions, world.store) == 1


async def test_a_url_longer_than_the_limit_once_encoded_is_refused(make_app, world, sessions,
                                                                   fake_dns):
    """927 characters as typed, 5,427 as stored and sent (each é percent-encoded)."""
    fake_dns["hooks.acme.example"] = ["93.184.215.14"]
    url = "https://hooks.acme.example/" + "é" * 900
    async with api_client(make_app("production")) as c:
        base = f"/api/v1/stores/{world.store}/webhooks"
        r = await c.post(base, headers=world.auth("store"),
                         json={"url": url, "events": ["invoice.*"]})
        assert r.status_code == 422 and "encoded, is longer than 2000" in r.text, r.text
        fits = "https://hooks.acme.example/" + "é" * 300  # 1,827 encoded
        r = await c.post(base, headers=world.auth("store"),
                         json={"url": fits, "events": ["invoice.*"]})
        assert r.status_code == 201 and len(r.json()["url"]) <= 2000, r.text
        p = await c.patch(f"{base}/{r.json()['id']}", headers=world.auth("store"),
                          json={"url": url})
        assert p.status_code == 422, p.text
    assert await hooks(sessions, world.store) == 1


async def test_concurrent_creations_stop_at_20_webhooks(make_app, world, sessions, fake_dns):
    fake_dns["hooks.acme.example"] = ["93.184.215.14"]
    async with api_client(make_app("production")) as c:
        base = f"/api/v1/stores/{world.store}/webhooks"
        answers = await asyncio.gather(*(
            c.post(base, headers=world.auth("store"),
                   json={"url": f"https://hooks.acme.example/{i}", "events": ["invoice.*"]})
            for i in range(30)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * 20 + [422] * 10, codes
    assert await hooks(sessions, world.store) == 20
