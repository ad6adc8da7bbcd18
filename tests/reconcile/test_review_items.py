"""Review items worked without SQL: listed (by kind, open or resolved, paged), shown, and
resolved once with a note by an admin, audited, through the admin API and the CLI. The
metric ``satvault_review_items_open`` follows; two admins resolving one item at once
resolve it once (the other gets 409)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.audit.models import AuditEvent
from satvault.db import utcnow
from satvault.onchain.models import ReviewItem, ReviewKind
from satvault.reconcile import review
from tests.test_cli import last_json, sv_here
from tests.waiting import lock_waiter
from tests.web.test_api import auth, client_for

URL = "/api/v1/admin/review-items"


async def people(sessions) -> dict[str, str]:
    async with sessions() as s, s.begin():
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
        _, admin_key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
        user = await acc.create_user(s, email="u@example.com")
        _, user_key = await acc.create_api_key(s, owner_id=user.id, scopes=[
            "wallet:read", "withdrawals:write"])
    return {"admin": admin_key, "admin_id": admin.id, "user": user_key}


async def items(sessions, *kinds: str) -> list[int]:
    """One open item per kind given, oldest first (a second apart)."""
    start = utcnow() - timedelta(hours=1)
    async with sessions() as s, s.begin():
        rows = [ReviewItem(kind=k, subject=f"subject-{i}", details=json.dumps({"n": i}),
                           created_at=start + timedelta(seconds=i))
                for i, k in enumerate(kinds)]
        s.add_all(rows)
        await s.flush()
        return [r.id for r in rows]


def open_metric(text: str) -> dict[str, float]:
    for family in text_string_to_metric_families(text):
        if family.name == "satvault_review_items_open":
            return {s.labels["kind"]: s.value for s in family.samples}
    raise AssertionError("no satvault_review_items_open in the scrape")


async def test_list_show_and_resolve_over_the_admin_api(engine, db_url, sessions):
    who = await people(sessions)
    ids = await items(sessions, "deposit_unassigned", "kyc_screening_hit", "deposit_unassigned",
                      "payout_stuck", "deposit_unassigned")
    admin = auth(who["admin"])
    async with client_for(engine, db_url) as c:
        assert (await c.get(URL, headers=auth(who["user"]))).status_code == 403
        before = open_metric((await c.get("/metrics")).text)
        assert before["deposit_unassigned"] == 3 and before["kyc_screening_hit"] == 1
        # every kind has a series, zero included
        assert set(before) >= {k.value for k in ReviewKind} and before["signer_limit"] == 0

        # paged, newest first, with a cursor: every item once
        seen: list[int] = []
        cursor = None
        for _ in range(5):
            r = await c.get(URL, headers=admin, params={"limit": 2, **(
                {"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            seen += [i["id"] for i in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(ids, reverse=True)
        for cursor in ("not-a-cursor", "9" * 19, "0", "-1"):
            bad = await c.get(URL, headers=admin, params={"cursor": cursor})
            assert bad.status_code == 422 and bad.json()["title"] == "invalid cursor", cursor

        by_kind = (await c.get(URL, headers=admin,
                               params={"kind": "deposit_unassigned"})).json()["items"]
        assert [i["id"] for i in by_kind] == [ids[4], ids[2], ids[0]]
        shown = await c.get(f"{URL}/{ids[1]}", headers=admin)
        assert shown.status_code == 200
        item = shown.json()
        assert (item["kind"], item["subject"], item["details"], item["status"]) == (
            "kyc_screening_hit", "subject-1", {"n": 1}, "open")
        assert (await c.get(f"{URL}/999999", headers=admin)).status_code == 404

        # a note is required; nothing changes without one
        empty = await c.post(f"{URL}/{ids[0]}/resolve", headers=admin, json={"note": " "})
        assert empty.status_code == 422, empty.text
        assert (await c.post(f"{URL}/{ids[0]}/resolve", headers=auth(who["user"]),
                             json={"note": "x"})).status_code == 403
        done = await c.post(f"{URL}/{ids[0]}/resolve", headers=admin,
                            json={"note": "refunded the sender by hand"})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["status"] == "resolved" and body["resolved_at"]
        assert body["resolved_by"] == f"user:{who['admin_id']}"
        assert body["resolution"] == "refunded the sender by hand"
        again = await c.post(f"{URL}/{ids[0]}/resolve", headers=admin,
                             json={"note": "again"})
        assert again.status_code == 409, again.text
        assert again.json()["title"] == "review item resolved"
        assert "already resolved" in again.json()["detail"]
        assert (await c.post(f"{URL}/999999/resolve", headers=admin,
                             json={"note": "x"})).status_code == 404

        after = open_metric((await c.get("/metrics")).text)
        assert after["deposit_unassigned"] == 2 and after["kyc_screening_hit"] == 1
        await c.post(f"{URL}/{ids[1]}/resolve", headers=admin, json={"note": "a namesake"})
        assert open_metric((await c.get("/metrics")).text)["kyc_screening_hit"] == 0

        resolved = (await c.get(URL, headers=admin, params={"status": "resolved"})).json()
        assert [i["id"] for i in resolved["items"]] == [ids[1], ids[0]]
        still = (await c.get(URL, headers=admin)).json()["items"]
        assert [i["id"] for i in still] == [ids[4], ids[3], ids[2]]
        every = (await c.get(URL, headers=admin, params={"status": "all"})).json()["items"]
        assert len(every) == 5
    async with sessions() as s:
        audited = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "review_item.resolved").order_by(AuditEvent.id))
        ).scalars().all()
    assert [a.object for a in audited] == [f"review_item:{ids[0]}", f"review_item:{ids[1]}"]
    assert audited[0].actor == f"user:{who['admin_id']}"
    assert json.loads(audited[0].state_after)["resolution"] == "refunded the sender by hand"
    assert json.loads(audited[0].state_before)["kind"] == "deposit_unassigned"


async def test_two_admins_resolving_one_item_at_once_resolve_it_once(
        engine, db_url, sessions, monkeypatch):
    who = await people(sessions)
    (item,) = await items(sessions, "payout_stuck")
    held, release = asyncio.Event(), asyncio.Event()
    real = review.record

    async def slow_record(session: Any, **kw: Any) -> None:  # the first, after its update
        await real(session, **kw)
        if not held.is_set():
            held.set()
            await release.wait()

    monkeypatch.setattr(review, "record", slow_record)
    admin = auth(who["admin"])
    async with client_for(engine, db_url) as c:
        first = asyncio.create_task(c.post(f"{URL}/{item}/resolve", headers=admin,
                                           json={"note": "first"}))
        try:
            await asyncio.wait_for(held.wait(), 10)
            second = asyncio.create_task(c.post(f"{URL}/{item}/resolve", headers=admin,
                                                json={"note": "second"}))
            if engine.dialect.name == "postgresql":  # until the second waits for the row
                await lock_waiter(engine, second)
        finally:
            release.set()
        one, two = await asyncio.wait_for(first, 10), await asyncio.wait_for(second, 10)
    assert one.status_code == 200, one.text
    assert two.status_code == 409, two.text
    async with sessions() as s:
        row = await s.get(ReviewItem, item)
        audited = (await s.execute(select(AuditEvent.id).where(
            AuditEvent.action == "review_item.resolved"))).all()
    assert row is not None and row.resolution == "first" and len(audited) == 1


async def test_review_from_the_command_line(sessions, db_url, tmp_path):
    await people(sessions)
    ids = await items(sessions, "signer_limit", "refill_needs_cosigners")
    listed = last_json(sv_here("review", "list", url=db_url, home=tmp_path))
    assert listed["ok"] and [i["id"] for i in listed["items"]] == [ids[1], ids[0]]
    only = last_json(sv_here("review", "list", "--kind", "signer_limit", "--limit", "1",
                             url=db_url, home=tmp_path))
    assert [i["id"] for i in only["items"]] == [ids[0]] and only["next_cursor"] is None
    shown = last_json(sv_here("review", "show", str(ids[0]), url=db_url, home=tmp_path))
    assert shown["item"]["kind"] == "signer_limit" and shown["item"]["status"] == "open"
    no_note = sv_here("review", "resolve", str(ids[0]), "--as", "root@example.com",
                      url=db_url, home=tmp_path, check=False)
    assert no_note.returncode != 0
    not_admin = sv_here("review", "resolve", str(ids[0]), "--as", "u@example.com",
                        "--note", "x", url=db_url, home=tmp_path, check=False)
    assert not_admin.returncode == 1 and "not an admin" in last_json(not_admin)["error"]
    done = last_json(sv_here("review", "resolve", str(ids[0]), "--as", "root@example.com",
                             "--note", "the window had room again", url=db_url,
                             home=tmp_path))
    assert done["ok"] and done["item"]["status"] == "resolved"
    assert done["item"]["resolved_by"].startswith("user:usr_")
    twice = sv_here("review", "resolve", str(ids[0]), "--as", "root@example.com",
                    "--note", "again", url=db_url, home=tmp_path, check=False)
    assert twice.returncode == 1 and "already resolved" in last_json(twice)["error"]
    left = last_json(sv_here("review", "list", url=db_url, home=tmp_path))
    assert [i["id"] for i in left["items"]] == [ids[1]]
