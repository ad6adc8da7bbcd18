"""The API keys page: listing without secrets, creation only after a step-up (its secret shown
once and working against the API), revoking, CSRF, and another merchant's keys not found."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import ApiKey
from satvault.audit.models import AuditEvent
from tests.web.pages.conftest import People
from tests.web.pages.merchant_helpers import fresh, signed_in, step_up, token_of

_SECRET = re.compile(r"<code data-secret>([^<]+)</code>")


async def test_create_use_and_revoke_a_key(browser: httpx.AsyncClient, people: People,
                                           sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        store = await acc.create_store(s, merchant_id=people.alice_merchant, name="Kiosk")
    await signed_in(browser)
    base = f"/dashboard/m/{people.alice_merchant}/keys"
    token = await token_of(browser, base)
    form = {"csrf_token": token, "label": "till", "owner_id": store.id,
            "scopes": ["stores:read", "invoices:read"]}

    # Without a step-up: off to the step-up page, and back to this page after it.
    r = await browser.post(base, data={**form, **fresh()}, headers={"referer": f"http://test{base}"})
    assert r.status_code == 303
    assert r.headers["location"] == f"/account/step-up?next={base}"
    async with sessions() as s:
        assert await acc.merchant_api_keys(s, people.alice_merchant) == []

    await step_up(sessions, people.alice)
    r = await browser.post(base, data={**form, **fresh()})
    assert r.status_code == 201, r.text
    secret = _SECRET.search(r.text)
    assert secret
    key = {"Authorization": f"Bearer {secret.group(1)}"}
    api = await browser.get(f"/api/v1/stores/{store.id}", headers=key)
    assert api.status_code == 200 and api.json()["name"] == "Kiosk"
    assert (await browser.post("/api/v1/stores", headers=key, json={"name": "x"})
            ).status_code == 403  # only the scopes ticked

    listing = await browser.get(base)
    async with sessions() as s:
        [row] = await acc.merchant_api_keys(s, people.alice_merchant)
    assert row.owner_id == store.id and row.scopes == "invoices:read stores:read"
    assert row.id in listing.text and secret.group(1) not in listing.text

    # Revoking: CSRF first, then for real; the API refuses the key from then on.
    revoke = f"{base}/{row.id}/revoke"
    assert (await browser.post(revoke, data={})).status_code == 403
    assert (await browser.get(f"/api/v1/stores/{store.id}", headers=key)).status_code == 200
    r = await browser.post(revoke, data={"csrf_token": token})
    assert r.status_code == 303
    assert (await browser.get(f"/api/v1/stores/{store.id}", headers=key)).status_code == 401
    assert "Revoked" in (await browser.get(base)).text


async def test_refused_input_and_other_merchants(browser: httpx.AsyncClient, people: People,
                                                 sessions: async_sessionmaker[AsyncSession]
                                                 ) -> None:
    async with sessions() as s, s.begin():
        bobs_store = await acc.create_store(s, merchant_id=people.bob_merchant, name="B")
        bobs_key, _ = await acc.create_api_key(s, owner_id=people.bob_merchant,
                                               scopes=["stores:read"])
    await signed_in(browser)
    await step_up(sessions, people.alice)
    base = f"/dashboard/m/{people.alice_merchant}/keys"
    token = await token_of(browser, base)
    # no scope, the admin scope, a store of Bob's: the form again, nothing created
    for owner, scopes, says in [(people.alice_merchant, [], "at least one scope"),
                                (people.alice_merchant, ["admin"], "scopes listed"),
                                (bobs_store.id, ["stores:read"], "one of its stores")]:
        r = await browser.post(base, data={**fresh(), "csrf_token": token, "label": "x",
                                           "owner_id": owner, "scopes": scopes})
        assert r.status_code in (404, 422) and says in r.text, r.text
    assert (await browser.post(base, data={"owner_id": people.alice_merchant,
                                           "scopes": ["stores:read"]})).status_code == 403
    async with sessions() as s:
        assert await acc.merchant_api_keys(s, people.alice_merchant) == []
    # Bob's merchant and Bob's key: not found; his key stays live.
    assert (await browser.get(f"/dashboard/m/{people.bob_merchant}/keys")).status_code == 404
    assert bobs_key.id not in (await browser.get(base)).text
    r = await browser.post(f"{base}/{bobs_key.id}/revoke", data={"csrf_token": token})
    assert r.status_code == 404
    r = await browser.post(f"/dashboard/m/{people.bob_merchant}/keys/{bobs_key.id}/revoke",
                           data={"csrf_token": token})
    assert r.status_code == 404
    async with sessions() as s:
        row = await s.get(ApiKey, bobs_key.id)
        assert row is not None and row.revoked_at is None


async def test_revoking_a_revoked_key_changes_nothing(browser: httpx.AsyncClient,
                                                     people: People, clock,
                                                     sessions: async_sessionmaker[AsyncSession]
                                                     ) -> None:
    """Found from outside: revoking a key revoked already moved its ``revoked_at`` and
    wrote a second ``apikey.revoke`` audit row."""
    async with sessions() as s, s.begin():
        key, _ = await acc.create_api_key(s, owner_id=people.alice_merchant,
                                          scopes=["stores:read"])
    await signed_in(browser)
    base = f"/dashboard/m/{people.alice_merchant}/keys"
    token = await token_of(browser, base)
    r = await browser.post(f"{base}/{key.id}/revoke", data={"csrf_token": token})
    assert r.status_code == 303
    async with sessions() as s:
        first = (await s.get(ApiKey, key.id)).revoked_at
    assert first is not None
    clock.advance(seconds=60)
    r = await browser.post(f"{base}/{key.id}/revoke", data={"csrf_token": token})
    assert r.status_code == 303
    async with sessions() as s:
        assert (await s.get(ApiKey, key.id)).revoked_at == first
        rows = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "apikey.revoke", AuditEvent.object == key.id))).scalars()
        assert len(list(rows)) == 1
