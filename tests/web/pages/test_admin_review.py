"""The review items in the admin console: listed newest first by kind and status, each with
its details, resolved once with a note through the service the admin API uses (audited), a
blank note refused with nothing changed, a second resolution told who was first."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from sqlalchemy import select

from satvault.accounts.models import AuditEvent
from satvault.db import utcnow
from satvault.onchain.models import ReviewItem, ReviewKind
from satvault.web.app import create_app
from tests.web.pages.admin_support import page_csrf, second_admin, sign_in_admin
from tests.web.pages.conftest import page_settings

pytestmark = pytest.mark.asyncio


async def open_items(sessions) -> tuple[int, int]:
    """Two items as the payout job and the watcher open them."""
    async with sessions() as s, s.begin():
        stuck = ReviewItem(kind=ReviewKind.PAYOUT_STUCK.value, subject="pb_stuck1",
                           details=json.dumps({"error": "PaidBefore", "txid": "ab" * 32}),
                           created_at=utcnow())
        orphan = ReviewItem(kind=ReviewKind.DEPOSIT_UNASSIGNED.value, subject="cd" * 32 + ":0",
                            details="an output to an address of nobody's", created_at=utcnow())
        s.add_all([stuck, orphan])
        await s.flush()
        return stuck.id, orphan.id


async def test_an_item_is_listed_shown_and_resolved_once_with_a_note(browser, people,
                                                                     sessions):
    stuck, orphan = await open_items(sessions)
    await sign_in_admin(browser, sessions)
    assert 'id="review-count">2<' in (await browser.get("/admin")).text
    listing = (await browser.get("/admin/review")).text
    assert f'href="/admin/review/{stuck}"' in listing and f'href="/admin/review/{orphan}"' \
        in listing
    only = (await browser.get("/admin/review?kind=payout_stuck")).text
    assert f'href="/admin/review/{stuck}"' in only and f'/admin/review/{orphan}"' not in only

    page = await browser.get(f"/admin/review/{stuck}")
    assert page.status_code == 200 and "pb_stuck1" in page.text
    assert "&#34;error&#34;: &#34;PaidBefore&#34;" in page.text  # the details, indented JSON
    token = await page_csrf(browser, f"/admin/review/{stuck}")

    # no note: refused, the item still open, nothing audited
    r = await browser.post(f"/admin/review/{stuck}/resolve",
                           data={"csrf_token": token, "note": "   "})
    assert r.status_code == 422 and "needs a note" in r.text
    async with sessions() as s:
        assert (await s.get(ReviewItem, stuck)).resolved_at is None
        assert (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "review_item.resolved"))).first() is None

    r = await browser.post(f"/admin/review/{stuck}/resolve",
                           data={"csrf_token": token, "note": "requeued after the restore"})
    assert r.status_code == 303 and r.headers["location"] == f"/admin/review?done={stuck}"
    after = (await browser.get(r.headers["location"])).text
    assert f"Review item {stuck} resolved." in after
    assert f'href="/admin/review/{stuck}"' not in after  # open items only, by default
    assert f'href="/admin/review/{stuck}"' in (await browser.get(
        "/admin/review?status=resolved")).text
    assert 'id="review-count">1<' in (await browser.get("/admin")).text
    async with sessions() as s:
        item = await s.get(ReviewItem, stuck)
        assert item.resolution == "requeued after the restore"
        assert item.resolved_by == f"user:{people.root}"
        audit = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "review_item.resolved"))).scalar_one()
        assert audit.object == f"review_item:{stuck}"
    shown = (await browser.get(f"/admin/review/{stuck}")).text
    assert "requeued after the restore" in shown and 'name="note"' not in shown

    # resolving it again (a second tab, another operator a moment later): 409, unchanged
    r = await browser.post(f"/admin/review/{stuck}/resolve",
                           data={"csrf_token": token, "note": "me too"})
    assert r.status_code == 409 and "already resolved" in r.text
    async with sessions() as s:
        assert (await s.get(ReviewItem, stuck)).resolution == "requeued after the restore"


async def test_two_operators_resolving_one_item_one_is_first(browser, people, sessions,
                                                             engine, db_url):
    """Two admins' sessions post the resolution of the same item: one 303, one 409."""
    (stuck, _) = await open_items(sessions)
    await second_admin(sessions)
    app = create_app(page_settings(db_url), engine=engine, start_workers=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test") as other:
        await sign_in_admin(browser, sessions)
        await sign_in_admin(other, sessions, "ops@example.com")
        mine = await page_csrf(browser, f"/admin/review/{stuck}")
        theirs = await page_csrf(other, f"/admin/review/{stuck}")
        a, b = await asyncio.gather(
            browser.post(f"/admin/review/{stuck}/resolve",
                         data={"csrf_token": mine, "note": "first"}),
            other.post(f"/admin/review/{stuck}/resolve",
                       data={"csrf_token": theirs, "note": "second"}))
    assert sorted([a.status_code, b.status_code]) == [303, 409]
    async with sessions() as s:
        assert (await s.get(ReviewItem, stuck)).resolution in ("first", "second")
        assert len((await s.execute(select(AuditEvent).where(
            AuditEvent.action == "review_item.resolved"))).all()) == 1


async def test_unknown_items_are_404(browser, people, sessions):
    await sign_in_admin(browser, sessions)
    assert (await browser.get("/admin/review/999999")).status_code == 404
    assert (await browser.get("/admin/review/0")).status_code == 422


async def test_only_a_stuck_payout_item_offers_its_batch(browser, people, sessions):
    stuck, orphan = await open_items(sessions)
    await sign_in_admin(browser, sessions)
    assert "/resolve-batch" in (await browser.get(f"/admin/review/{stuck}")).text
    assert "/resolve-batch" not in (await browser.get(f"/admin/review/{orphan}")).text
    token = await page_csrf(browser, f"/admin/review/{orphan}")
    r = await browser.post(f"/admin/review/{orphan}/resolve-batch",
                           data={"csrf_token": token, "action": "requeue", "note": "x"})
    assert r.status_code == 422 and "payout_stuck" in r.text
    async with sessions() as s:
        assert (await s.get(ReviewItem, orphan)).resolved_at is None
