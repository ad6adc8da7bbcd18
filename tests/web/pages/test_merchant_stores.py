"""The merchant's stores page: list, create and change settings through the page as the
API's store endpoints would, refused input shown again with nothing changed, CSRF, and
another merchant's stores not found."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from tests.web.pages.conftest import People
from tests.web.pages.merchant_helpers import signed_in, token_of


async def _api_key(sessions: async_sessionmaker[AsyncSession], merchant: str) -> dict[str, str]:
    async with sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=merchant, scopes=["stores:read"])
    return {"Authorization": f"Bearer {token}"}


async def test_create_list_and_change_a_store(browser: httpx.AsyncClient, people: People,
                                              sessions: async_sessionmaker[AsyncSession]
                                              ) -> None:
    await signed_in(browser)
    base = f"/dashboard/m/{people.alice_merchant}/stores"
    token = await token_of(browser, base)
    r = await browser.post(base, data={"csrf_token": token, "name": "Corner Café",
                                       "default_currency": "eur", "speed_policy": "2",
                                       "spread_bp": "150"})
    assert r.status_code == 303, r.text
    store_id = r.headers["location"].split("/")[-1].split("?")[0]
    key = await _api_key(sessions, people.alice_merchant)
    api = (await browser.get(f"/api/v1/stores/{store_id}", headers=key)).json()
    assert (api["name"], api["default_currency"], api["speed_policy"], api["spread_bp"]) == \
        ("Corner Café", "EUR", 2, 150)
    listing = await browser.get(base)
    assert "Corner Café" in listing.text and store_id in listing.text

    page = f"{base}/{store_id}"
    r = await browser.post(page, data={"csrf_token": token, "name": "Corner Café 2",
                                       "default_currency": "SATS", "speed_policy": "6",
                                       "spread_bp": "0"})
    assert r.status_code == 303
    api = (await browser.get(f"/api/v1/stores/{store_id}", headers=key)).json()
    assert (api["name"], api["default_currency"], api["speed_policy"], api["spread_bp"]) == \
        ("Corner Café 2", "SATS", 6, 0)
    shown = await browser.get(page)
    assert 'value="Corner Café 2"' in shown.text and "Saved." not in shown.text


async def test_bad_input_shows_the_form_again_and_changes_nothing(
        browser: httpx.AsyncClient, people: People,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    await signed_in(browser)
    async with sessions() as s, s.begin():
        store = await acc.create_store(s, merchant_id=people.alice_merchant, name="Kiosk")
    base = f"/dashboard/m/{people.alice_merchant}/stores"
    token = await token_of(browser, base)
    r = await browser.post(base, data={"csrf_token": token, "name": "Nope",
                                       "default_currency": "XXXX", "speed_policy": "1",
                                       "spread_bp": "0"})
    assert r.status_code == 422 and "default_currency" in r.text
    assert 'value="Nope"' in r.text  # the user's input kept
    r = await browser.post(f"{base}/{store.id}", data={
        "csrf_token": token, "name": "Kiosk", "default_currency": "BTC",
        "speed_policy": "1", "spread_bp": "5000"})
    assert r.status_code == 422 and "spread_bp" in r.text and 'value="5000"' in r.text
    async with sessions() as s:
        names = [x.name for x in await acc.list_stores(s, merchant_id=people.alice_merchant)]
        assert names == ["Kiosk"]
        assert (await acc.get_store(s, store.id)).spread_bp == 0


async def test_csrf_and_other_merchants(browser: httpx.AsyncClient, people: People,
                                        sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        mine = await acc.create_store(s, merchant_id=people.alice_merchant, name="Mine")
        bobs = await acc.create_store(s, merchant_id=people.bob_merchant, name="Bob's store")
    await signed_in(browser)
    base = f"/dashboard/m/{people.alice_merchant}/stores"
    token = await token_of(browser, base)
    r = await browser.post(base, data={"name": "No token"})
    assert r.status_code == 403
    r = await browser.post(f"{base}/{mine.id}", data={"name": "No token",
                                                      "csrf_token": "wrong"})
    assert r.status_code == 403
    # Bob's merchant, and Bob's store under Alice's merchant: not found, nothing changed.
    bob_base = f"/dashboard/m/{people.bob_merchant}/stores"
    assert (await browser.get(bob_base)).status_code == 404
    assert (await browser.post(bob_base, data={"csrf_token": token, "name": "x"})
            ).status_code == 404
    assert (await browser.get(f"{base}/{bobs.id}")).status_code == 404
    r = await browser.post(f"{base}/{bobs.id}", data={"csrf_token": token, "name": "Taken"})
    assert r.status_code == 404
    assert "Bob's store" not in (await browser.get(base)).text
    async with sessions() as s:
        assert (await acc.get_store(s, bobs.id)).name == "Bob's store"
        assert (await acc.get_store(s, mine.id)).name == "Mine"
        assert len(await acc.list_stores(s, merchant_id=people.bob_merchant)) == 1
