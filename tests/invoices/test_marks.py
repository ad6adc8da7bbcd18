"""A merchant's mark through the HTTP API: audited (who, from what to what), and a mark that
changes nothing (the same status again) is a no-op that sends no second event."""

from __future__ import annotations

from sqlalchemy import select

from satvault.audit.service import list_events
from satvault.events.models import OutboxEvent
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import create, shop  # noqa: F401


async def _events(env: LnEnv, invoice_id: str) -> list[str]:
    async with env.sessions() as s:
        return list((await s.execute(select(OutboxEvent.type).where(
            OutboxEvent.subject_type == "invoice", OutboxEvent.subject_id == invoice_id
        ).order_by(OutboxEvent.id))).scalars())


async def test_a_mark_is_audited_and_marking_the_same_status_again_changes_nothing(
        lnenv: LnEnv, shop):  # noqa: F811
    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "m1", amount="1000", currency="SATS")).json()
        url = f"/api/v1/invoices/{inv['id']}/mark"
        first = await c.post(url, headers=shop["key"], json={"status": "invalid"})
        assert first.status_code == 200, first.text
        again = await c.post(url, headers=shop["key"], json={"status": "invalid"})
        assert again.status_code == 200, again.text
        assert again.json() == first.json()  # nothing changed, not even updated_at
        assert await _events(env, inv["id"]) == ["invoice.created", "invoice.invalid"]
        # A merchant may still change its mind: that is a change, audited and sent.
        other = await c.post(url, headers=shop["key"], json={"status": "settled"})
        assert other.status_code == 200 and other.json()["status"] == "settled"
    assert await _events(env, inv["id"]) == ["invoice.created", "invoice.invalid",
                                             "invoice.settled"]
    async with env.sessions() as s:
        marks = await list_events(s, action="invoice.mark", object=inv["id"])
    assert [(m["before"]["status"], m["after"]["status"]) for m in marks] == [
        ("new", "invalid"), ("invalid", "settled")]
    assert all(m["actor"].startswith("key:") for m in marks)
    assert marks[0]["after"]["additional_status"] == "marked"
    await env.check()
