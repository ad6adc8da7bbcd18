"""The KYC review queue: a pending upgrade request is listed with the owner's tier, approved
through the page (a KYC record is inserted, the tier moves, the history keeps every record),
rejected with a note, and not decided twice."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from satvault.accounts.models import AuditEvent, User
from satvault.kyc import requests as kyc_requests
from satvault.kyc import service as kyc
from satvault.kyc.models import KycRecord, KycRequest, KycRequestStatus
from tests.web.pages.admin_support import page_csrf, sign_in_admin

pytestmark = pytest.mark.asyncio


async def ask(sessions, owner_type: str, owner_id: str, tier: int, requested_by: str) -> str:
    async with sessions() as s, s.begin():
        r = await kyc_requests.request_upgrade(
            s, owner_type=owner_type, owner_id=owner_id, tier=tier, full_name="Alice Example",
            documents=["docstore://passport/123"], requested_by=requested_by, max_tier=3,
            note="for larger payouts")
        return r.id


async def test_approving_a_request_raises_the_tier_and_keeps_the_history(browser, people,
                                                                         sessions):
    first = await ask(sessions, "user", people.alice, 1, people.alice)
    await sign_in_admin(browser, sessions)
    queue = await browser.get("/admin/kyc")
    assert queue.status_code == 200
    assert f'href="/admin/kyc/{first}"' in queue.text and "alice@example.com" in queue.text
    assert 'id="kyc-count">1<' in (await browser.get("/admin")).text

    page = await browser.get(f"/admin/kyc/{first}")
    assert "docstore://passport/123" in page.text and "for larger payouts" in page.text
    token = await page_csrf(browser, f"/admin/kyc/{first}")
    # An approval names the checks done: without any, the service refuses; nothing changed.
    r = await browser.post(f"/admin/kyc/{first}/decide", data={
        "csrf_token": token, "decision": "approve", "notes": "looked fine"})
    assert r.status_code == 422 and "checks done" in r.text
    assert "looked fine</textarea>" in r.text
    async with sessions() as s:
        assert await kyc.tier_of(s, "user", people.alice) == 0

    r = await browser.post(f"/admin/kyc/{first}/decide", data={
        "csrf_token": token, "decision": "approve", "checks": ["id-document", "liveness"],
        "other_checks": "video call\n", "notes": "passport checked"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/kyc?done=approved"
    assert "No request is waiting." in (await browser.get(r.headers["location"])).text
    async with sessions() as s:
        assert await kyc.tier_of(s, "user", people.alice) == 1
        assert (await s.get(User, people.alice)).kyc_tier == 1
        req = await s.get(KycRequest, first)
        assert req.status == KycRequestStatus.APPROVED and req.decided_by == people.root
        rec = await s.get(KycRecord, req.record_id)
        assert rec.reviewer == people.root and rec.notes == "passport checked"
        assert json.loads(rec.checks) == ["id-document", "liveness", "video call"]
        audit = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "kyc.record"))).scalar_one()
        assert audit.actor == people.root and audit.object == f"user:{people.alice}"

    # Decided once: the same form again is refused (409) and nothing more is recorded.
    r = await browser.post(f"/admin/kyc/{first}/decide", data={
        "csrf_token": token, "decision": "reject", "notes": "changed my mind"})
    assert r.status_code == 409 and "decided already" in r.text

    # A second request, rejected: the tier stays 1, the history holds both records.
    second = await ask(sessions, "user", people.alice, 2, people.alice)
    r = await browser.post(f"/admin/kyc/{second}/decide", data={
        "csrf_token": token, "decision": "reject", "notes": "documents expired"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/kyc?done=rejected"
    async with sessions() as s:
        assert await kyc.tier_of(s, "user", people.alice) == 1
        history = await kyc.history(s, "user", people.alice)
    assert [(h.tier, h.decision.value) for h in history] == [(1, "approved"), (2, "rejected")]
    account = await browser.get(f"/admin/accounts/user/{people.alice}")
    assert 'id="kyc-tier">1<' in account.text
    assert "passport checked" in account.text and "documents expired" in account.text


async def test_a_merchant_request_and_the_csrf_check(browser, people, sessions):
    rid = await ask(sessions, "merchant", people.bob_merchant, 1, people.bob)
    await sign_in_admin(browser, sessions)
    r = await browser.post(f"/admin/kyc/{rid}/decide", data={
        "decision": "approve", "checks": ["business-registration"]})
    assert r.status_code == 403
    async with sessions() as s:
        assert (await s.get(KycRequest, rid)).status == KycRequestStatus.PENDING
    token = await page_csrf(browser, "/admin/kyc")
    r = await browser.post(f"/admin/kyc/{rid}/decide", data={
        "csrf_token": token, "decision": "approve", "checks": ["business-registration"]})
    assert r.status_code == 303
    async with sessions() as s:
        assert await kyc.tier_of(s, "merchant", people.bob_merchant) == 1
    assert (await browser.get("/admin/kyc/kyq_missing")).status_code == 404


async def test_the_reviewer_is_never_the_subject(browser, people, sessions):
    rid = await ask(sessions, "user", people.root, 1, people.root)
    await sign_in_admin(browser, sessions)
    token = await page_csrf(browser, "/admin/kyc")
    r = await browser.post(f"/admin/kyc/{rid}/decide", data={
        "csrf_token": token, "decision": "approve", "checks": ["id-document"]})
    assert r.status_code == 403 and "cannot be its subject" in r.text
    async with sessions() as s:
        assert (await s.get(KycRequest, rid)).status == KycRequestStatus.PENDING


async def test_the_queue_through_the_admin_api(browser, people, sessions):
    from satvault.accounts import service as acc

    rid = await ask(sessions, "user", people.alice, 1, people.alice)
    async with sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=people.root, scopes=["admin"])
    auth = {"Authorization": f"Bearer {token}"}
    r = await browser.get("/api/v1/admin/kyc/requests", headers=auth)
    assert r.status_code == 200 and [x["id"] for x in r.json()] == [rid]
    r = await browser.post(f"/api/v1/admin/kyc/requests/{rid}/decide", headers=auth,
                           json={"decision": "approve", "checks": ["id-document"]})
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    r = await browser.post(f"/api/v1/admin/kyc/requests/{rid}/decide", headers=auth,
                           json={"decision": "approve", "checks": ["id-document"]})
    assert r.status_code == 409


async def test_one_pending_request_per_owner_held_by_the_database(people, sessions):
    from sqlalchemy.exc import IntegrityError

    from satvault.db import utcnow
    from satvault.kyc.errors import InvalidKycInput

    await ask(sessions, "user", people.alice, 1, people.alice)
    with pytest.raises(InvalidKycInput, match="waiting for review already"):
        await ask(sessions, "user", people.alice, 2, people.alice)
    for extra in ({"owner_id": people.alice},  # a second pending one, past the service
                  {"owner_id": people.bob, "status": KycRequestStatus.APPROVED}):  # no record
        with pytest.raises(IntegrityError):
            async with sessions() as s, s.begin():
                s.add(KycRequest(**{"id": f"kyq_raw_{extra['owner_id']}",
                                    "owner_type": "user", "tier": 1, "full_name": "X",
                                    "documents": "[]", "requested_by": "x",
                                    "requested_at": utcnow(),
                                    "status": KycRequestStatus.PENDING, **extra}))


async def test_a_name_with_a_direction_override_is_shown_as_stored(browser, people, sessions):
    """Found from outside: a request's name "U+202E eoD nhoJ" drew as "John Doe" on the
    review page, a listed name the reviewer then saw. The console writes such characters
    out and shows the letters in the order they are stored."""
    async with sessions() as s, s.begin():
        r = await kyc_requests.request_upgrade(
            s, owner_type="user", owner_id=people.alice, tier=1, full_name="\u202eeoD nhoJ",
            documents=["docstore://passport/9"], requested_by=people.alice, max_tier=3,
            note="")
    await sign_in_admin(browser, sessions)
    page = await browser.get(f"/admin/kyc/{r.id}")
    assert page.status_code == 200
    assert "\u27e8U+202E\u27e9eoD nhoJ" in page.text and "\u202e" not in page.text
