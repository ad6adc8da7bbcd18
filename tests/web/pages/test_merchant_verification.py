"""A merchant asks for a KYC upgrade from the dashboard: the request waits in the admin
console's queue, one at a time; once an admin approves it the page shows the new tier and
its limits. Another merchant's page is a 404, the form needs its CSRF token, and the owner
API asks and reads the same way with an API key, for its own owner only."""

from __future__ import annotations

import pytest

from satvault.accounts import service as acc
from satvault.kyc import requests as kyc_requests
from satvault.kyc import service as kyc
from satvault.kyc.models import KycRequest, KycRequestStatus
from tests.web.pages.admin_support import page_csrf, sign_in_admin
from tests.web.pages.merchant_helpers import signed_in, token_of

pytestmark = pytest.mark.asyncio


async def test_request_through_the_page_approved_in_the_admin_queue(browser, people,
                                                                     sessions):
    await signed_in(browser)
    url = f"/dashboard/m/{people.alice_merchant}/verification"
    page = await browser.get(url)
    assert page.status_code == 200
    assert 'id="kyc-tier">0<' in page.text and 'id="kyc-limits"' in page.text
    assert f'href="{url}" aria-current="page"' in page.text
    assert "No request yet." in page.text
    token = await token_of(browser, url)

    # A request without any document is refused by the service's rules: form kept.
    r = await browser.post(url, data={"csrf_token": token, "full_name": "Alice Shop BV",
                                      "documents": "  \n", "note": "bigger payouts"})
    assert r.status_code == 422 and "bigger payouts</textarea>" in r.text
    async with sessions() as s:
        assert await kyc_requests.requests_of(s, "merchant", people.alice_merchant) == []

    r = await browser.post(url, data={
        "csrf_token": token, "full_name": "Alice Shop BV",
        "documents": "docstore://kyb/alice/registry.pdf\ndocstore://kyb/alice/ubo.pdf\n",
        "note": "bigger payouts"})
    assert r.status_code == 303 and r.headers["location"] == f"{url}?done=requested"
    page = await browser.get(r.headers["location"])
    assert "Your request was sent" in page.text and 'id="kyc-pending"' in page.text
    assert "docstore://kyb/alice/ubo.pdf" in page.text and "Waiting for review" in page.text
    assert "Request the next tier" not in page.text

    # One pending request at a time: a second post is refused with the service's message.
    r = await browser.post(url, data={"csrf_token": token, "full_name": "Alice Shop BV",
                                      "documents": "docstore://x", "note": ""})
    assert r.status_code == 422 and "waiting for review already" in r.text
    async with sessions() as s:
        (req,) = await kyc_requests.requests_of(s, "merchant", people.alice_merchant)
    assert req.tier == 1 and req.requested_by == people.alice
    assert req.full_name == "Alice Shop BV" and req.note == "bigger payouts"

    # The admin sees it in the queue and approves it through the admin page.
    async with browser.__class__(transport=browser._transport,
                                 base_url="http://test") as admin:
        await sign_in_admin(admin, sessions)
        queue = await admin.get("/admin/kyc")
        assert f'href="/admin/kyc/{req.id}"' in queue.text and "Alice&#39;s Shop" in queue.text
        detail = await admin.get(f"/admin/kyc/{req.id}")
        assert "docstore://kyb/alice/registry.pdf" in detail.text
        atoken = await page_csrf(admin, f"/admin/kyc/{req.id}")
        r = await admin.post(f"/admin/kyc/{req.id}/decide", data={
            "csrf_token": atoken, "decision": "approve",
            "checks": ["business-registration"], "notes": "registry extract checked"})
        assert r.status_code == 303

    page = await browser.get(url)
    assert 'id="kyc-tier">1<' in page.text and "Approved" in page.text
    assert 'id="kyc-pending"' not in page.text and "Request the next tier" in page.text
    async with sessions() as s:
        assert await kyc.tier_of(s, "merchant", people.alice_merchant) == 1
        assert (await s.get(KycRequest, req.id)).status == KycRequestStatus.APPROVED


async def test_limits_are_the_configured_table(browser, people):
    from satvault.config import Settings

    table = Settings().kyc_tier_limits_msat
    await signed_in(browser)
    page = await browser.get(f"/dashboard/m/{people.alice_merchant}/verification")
    per_tx = table[0]["onchain"][0] // 1000
    assert f"{per_tx:,}".replace(",", "") in page.text.replace(",", "").replace("\u202f", "")


async def test_another_merchant_and_csrf(browser, people, sessions):
    await signed_in(browser)
    other = f"/dashboard/m/{people.bob_merchant}/verification"
    assert (await browser.get(other)).status_code == 404
    token = await token_of(browser, f"/dashboard/m/{people.alice_merchant}/verification")
    r = await browser.post(other, data={"csrf_token": token, "full_name": "Bob",
                                        "documents": "docstore://b"})
    assert r.status_code == 404
    r = await browser.post(f"/dashboard/m/{people.alice_merchant}/verification",
                           data={"full_name": "Alice", "documents": "docstore://a"})
    assert r.status_code == 403
    async with sessions() as s:
        for m in (people.alice_merchant, people.bob_merchant):
            assert await kyc_requests.requests_of(s, "merchant", m) == []


async def test_the_owner_api_with_an_api_key(browser, people, sessions):
    async with sessions() as s, s.begin():
        _, alice_key = await acc.create_api_key(s, owner_id=people.alice_merchant,
                                                scopes=["wallet:read", "wallet:write"])
        _, reader = await acc.create_api_key(s, owner_id=people.alice_merchant,
                                             scopes=["wallet:read"])
        _, admin_key = await acc.create_api_key(s, owner_id=people.root, scopes=["admin"])
    auth = {"Authorization": f"Bearer {alice_key}"}
    body = {"full_name": "Alice Shop BV", "documents": ["docstore://kyb/alice/1"],
            "note": "api"}
    assert (await browser.post("/api/v1/kyc/requests", json=body)).status_code == 401
    r = await browser.post("/api/v1/kyc/requests", json=body,
                           headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 403
    # Another owner's id, named by a merchant's key: not found, nothing queued.
    r = await browser.post("/api/v1/kyc/requests", headers=auth, json={
        **body, "owner_type": "merchant", "owner_id": people.bob_merchant})
    assert r.status_code == 404
    r = await browser.get("/api/v1/kyc/requests", headers=auth,
                          params={"owner_type": "merchant", "owner_id": people.bob_merchant})
    assert r.status_code == 404

    r = await browser.post("/api/v1/kyc/requests", headers=auth, json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["owner_type"], made["owner_id"], made["tier"], made["status"]) == (
        "merchant", people.alice_merchant, 1, "pending")
    r = await browser.post("/api/v1/kyc/requests", headers=auth, json=body)
    assert r.status_code == 422 and "waiting for review already" in r.text

    r = await browser.get("/api/v1/kyc/requests", headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 200
    status = r.json()
    assert status["kyc_tier"] == 0 and status["next_tier"] == 1
    assert [x["id"] for x in status["requests"]] == [made["id"]]
    assert set(status["limits"]) == {"onchain", "lightning", "internal"}

    # The admin API's queue holds it; the admin decides; the owner reads the new tier.
    admin = {"Authorization": f"Bearer {admin_key}"}
    r = await browser.get("/api/v1/admin/kyc/requests", headers=admin)
    assert [x["id"] for x in r.json()] == [made["id"]]
    r = await browser.post(f"/api/v1/admin/kyc/requests/{made['id']}/decide", headers=admin,
                           json={"decision": "approve", "checks": ["business-registration"]})
    assert r.status_code == 200, r.text
    status = (await browser.get("/api/v1/kyc/requests", headers=auth)).json()
    assert status["kyc_tier"] == 1 and status["requests"][0]["status"] == "approved"
    assert status["records"][0]["decision"] == "approved"
    # Bob's merchant is untouched; an admin key names the owner it reads.
    r = await browser.get("/api/v1/kyc/requests", headers=admin,
                          params={"owner_type": "merchant", "owner_id": people.bob_merchant})
    assert r.status_code == 200 and r.json()["requests"] == [] and r.json()["kyc_tier"] == 0
    r = await browser.post("/api/v1/kyc/requests", headers=admin, json={
        **body, "owner_type": "merchant", "owner_id": "mer_missing"})
    assert r.status_code == 404
    async with sessions() as s:
        assert await kyc_requests.requests_of(s, "merchant", "mer_missing") == []


async def test_a_store_key_is_refused(browser, people, sessions):
    async with sessions() as s, s.begin():
        store = await acc.create_store(s, merchant_id=people.alice_merchant, name="Shop")
        _, token = await acc.create_api_key(s, owner_id=store.id,
                                            scopes=["wallet:read", "wallet:write"])
    r = await browser.post("/api/v1/kyc/requests", headers={"Authorization": f"Bearer {token}"},
                           json={"full_name": "A", "documents": ["docstore://a"]})
    assert r.status_code == 403 and "merchant's key" in r.text
