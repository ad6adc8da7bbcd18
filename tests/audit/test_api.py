"""GET /api/v1/admin/audit and /api/v1/admin/audit/verify: admin only, rows with hashes."""

from __future__ import annotations

from satvault.accounts import service as acc
from satvault.audit.service import record
from tests.web.test_api import auth, client_for


async def test_admin_lists_rows_with_hashes_and_verifies(engine, db_url, sessions):
    async with sessions() as s, s.begin():
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
        _, admin_key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
        user = await acc.create_user(s, email="u@example.com")
        _, user_key = await acc.create_api_key(s, owner_id=user.id, scopes=["wallet:read"])
    async with client_for(engine, db_url) as c:
        assert (await c.get("/api/v1/admin/audit", headers=auth(user_key))).status_code == 403
        assert (await c.get("/api/v1/admin/audit/verify",
                            headers=auth(user_key))).status_code == 403
        checked = await c.get("/api/v1/admin/audit/verify", headers=auth(admin_key))
        assert checked.status_code == 200, checked.text
        body = checked.json()
        assert body["ok"] is True and body["broken"] is None and body["rows"] >= 4
        page = await c.get("/api/v1/admin/audit", params={"limit": 2},
                           headers=auth(admin_key))
        assert page.status_code == 200
        rows = page.json()["rows"]
        assert [r["seq"] for r in rows] == [1, 2] and rows[0]["prev_hash"] == "0" * 64
        assert rows[1]["prev_hash"] == rows[0]["hash"]
        assert rows[0]["action"] == "user.create" and rows[0]["after"]["is_admin"] is True
        rest = await c.get("/api/v1/admin/audit", headers=auth(admin_key),
                           params={"after": page.json()["next_after"]})
        assert rest.json()["rows"][0]["seq"] == 3
        bad = await c.get("/api/v1/admin/audit", params={"limit": 0}, headers=auth(admin_key))
        assert bad.status_code == 422


async def test_admin_requests_an_onchain_anchor_and_lists_anchors(engine, db_url, sessions):
    async with sessions() as s, s.begin():
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
        _, admin_key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
        user = await acc.create_user(s, email="u@example.com")
        _, user_key = await acc.create_api_key(s, owner_id=user.id, scopes=["wallet:read"])
    async with client_for(engine, db_url) as c:
        url = "/api/v1/admin/audit/anchors"
        assert (await c.post(url, headers=auth(user_key))).status_code == 403
        first = await c.post(url, headers=auth(admin_key))
        assert first.status_code == 202, first.text
        second = (await c.post(url, headers=auth(admin_key))).json()
        assert second["requested"] and second["seq"] > first.json()["seq"]
        listed = (await c.get(url, headers=auth(admin_key))).json()["anchors"]
        # the newer request replaces the older one no sweep carried yet
        assert [(a["seq"], a["status"], a["requested_by"]) for a in listed] == [
            (second["seq"], "requested", admin.id),
            (first.json()["seq"], "superseded", admin.id)]
        assert listed[0]["hash"] == second["hash"] and listed[0]["txid"] is None


async def test_paging_with_next_after_never_skips_a_row_that_commits_late(
        engine, db_url, sessions):
    """Found from outside: on PostgreSQL an audit id is taken at INSERT and becomes visible at
    COMMIT, so a transaction holding a lower id can commit after one holding a higher id. The
    page returned the higher row and ``next_after`` passed the lower one, which the next page
    then never showed. (On SQLite writers take the write lock up front and ids commit in
    order.)"""
    async with sessions() as s, s.begin():
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
        _, admin_key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
    sqlite = db_url.startswith("sqlite")
    async with client_for(engine, db_url) as c:

        async def page(after: int) -> tuple[list[str], int]:
            r = await c.get("/api/v1/admin/audit", headers=auth(admin_key),
                            params={"after": after, "limit": 1000})
            assert r.status_code == 200, r.text
            body = r.json()
            return [row["action"] for row in body["rows"]], body["next_after"]

        _, start = await page(0)
        seen: list[str] = []
        slow = sessions()
        await slow.begin()
        try:
            await record(slow, actor="probe", action="probe.early")
            await slow.flush()
            if sqlite:  # the open writer holds the lock: commit it first, as SQLite orders
                await slow.commit()
            async with sessions() as s, s.begin():
                await record(s, actor="probe", action="probe.late")
            got, after = await page(start)
            seen += got
            if not sqlite:
                # the early row's transaction is still open: the page stops below its id
                assert got == [] and after == start
                await slow.commit()
        finally:
            await slow.close()
        got, _ = await page(after)
        seen += got
    assert seen == ["probe.early", "probe.late"]
