"""The audit log in the admin console: filtered rows, and verify showing ok — then, after a
row is changed behind the triggers' back, the first broken row. And the report downloads."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader
from sqlalchemy import select

from satvault.accounts.models import AuditEvent
from satvault.audit.service import record
from tests.audit.test_chain import _bypassing_triggers, _dialect
from tests.web.pages.admin_support import merchant_wallet, page_csrf, sign_in_admin

pytestmark = pytest.mark.asyncio


async def test_verify_shows_ok_then_the_first_broken_row(browser, people, sessions):
    await sign_in_admin(browser, sessions)
    token = await page_csrf(browser, "/admin/audit")
    r = await browser.post("/admin/audit/verify", data={"csrf_token": token})
    assert r.status_code == 200, r.text
    assert "OK: the chain is intact." in r.text and "BROKEN" not in r.text
    async with sessions() as s:
        victim = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "user.create", AuditEvent.object == people.bob)
        )).scalar_one()
    assert victim.seq is not None
    await _bypassing_triggers(
        sessions, _dialect(sessions),
        f"UPDATE audit_events SET state_after = '{{\"is_admin\": true}}' "
        f"WHERE id = {victim.id}", "audit_events")
    r = await browser.post("/admin/audit/verify", data={"csrf_token": token})
    assert r.status_code == 200
    assert "BROKEN: the chain does not verify." in r.text and "OK:" not in r.text
    assert f'id="broken-row">id {victim.id}, seq {victim.seq}<' in r.text
    assert "changed after sealing" in r.text


async def test_verify_needs_its_csrf_token(browser, people, sessions):
    await sign_in_admin(browser, sessions)
    r = await browser.post("/admin/audit/verify", data={})
    assert r.status_code == 403 and "OK:" not in r.text


async def test_the_log_filters_by_actor_action_object_and_day(browser, people, sessions):
    wallet = await merchant_wallet(sessions, people.alice_merchant)
    await sign_in_admin(browser, sessions)
    token = await page_csrf(browser)
    await browser.post(f"/admin/wallets/{wallet.id}/freeze",
                       data={"csrf_token": token, "reason": "court order", "confirm": "yes"})
    everything = await browser.get("/admin/audit")
    assert "wallet.freeze" in everything.text and "user.create" in everything.text
    for params in ({"actor": people.root}, {"action": "wallet.freeze"}, {"action": "wallet."},
                   {"object": wallet.id}):
        r = await browser.get("/admin/audit", params=params)
        assert r.status_code == 200
        assert "wallet.freeze" in r.text and "user.create" not in r.text, params
    r = await browser.get("/admin/audit", params={"from": "2000-01-01", "to": "2000-01-02"})
    assert "No audit row." in r.text
    r = await browser.get("/admin/audit", params={"from": "yesterday"})
    assert r.status_code == 422


async def test_reports_download_in_each_format(browser, people, sessions):
    await sign_in_admin(browser, sessions)
    page = await browser.get("/admin/reports")
    assert page.status_code == 200 and "Compliance report" in page.text
    period = {"from": "2026-11-01", "to": "2026-11-30"}
    r = await browser.get("/admin/reports/download",
                          params={**period, "report": "compliance", "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="compliance-2026-11-01-2026-11-30.csv"' in r.headers[
        "content-disposition"]
    r = await browser.get("/admin/reports/download",
                          params={**period, "report": "compliance", "format": "json"})
    assert r.status_code == 200
    assert r.json()["period"] == {"from": "2026-11-01", "to": "2026-11-30"}
    r = await browser.get("/admin/reports/download",
                          params={**period, "report": "compliance", "format": "pdf"})
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    assert len(PdfReader(io.BytesIO(r.content)).pages) >= 1
    r = await browser.get("/admin/reports/download",
                          params={**period, "report": "ctr", "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    r = await browser.get("/admin/reports/download",
                          params={**period, "report": "ctr", "format": "pdf"})
    assert r.status_code == 422
    r = await browser.get("/admin/reports/download", params={
        "from": "2026-11-30", "to": "2026-11-01", "report": "ctr", "format": "json"})
    assert r.status_code == 422 and "before it starts" in r.text


async def test_the_log_through_the_last_day_has_no_end(browser, people, sessions):
    """``to`` is a UTC day, included: its bound is the midnight after it, and 9999-12-31 has
    none (``date.max + 1 day`` overflowed: a 500). Through the last day is no bound."""
    await sign_in_admin(browser, sessions)
    r = await browser.get("/admin/audit", params={"from": "0001-01-01", "to": "9999-12-31"})
    assert r.status_code == 200 and "user.create" in r.text


async def test_filtering_by_a_person_finds_their_rows_however_the_actor_is_spelled(
        browser, people, sessions):
    """Found from outside: the log spells a person ``usr_…`` in some rows (a freeze) and
    ``user:usr_…`` in others (a case decision), and the actor filter, and the account page's
    trail, found one spelling only. Either spelling finds both; another person's rows
    stay out."""
    async with sessions() as s, s.begin():
        await record(s, actor=people.root, action="probe.bare")
        await record(s, actor=f"user:{people.root}", action="probe.prefixed")
        await record(s, actor=f"user:{people.bob}", action="probe.someone_else")
    await sign_in_admin(browser, sessions)
    for actor in (people.root, f"user:{people.root}"):
        r = await browser.get("/admin/audit", params={"actor": actor})
        assert r.status_code == 200
        assert "probe.bare" in r.text and "probe.prefixed" in r.text, actor
        assert "probe.someone_else" not in r.text, actor
    r = await browser.get("/admin/audit", params={"actor": "system"})
    assert "probe." not in r.text
