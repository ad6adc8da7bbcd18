"""A mark and a status change written at the same moment are counted one after the other.

Found from outside: a mark read the invoice without a lock and wrote its status over
whatever a payment's crediting transaction had just committed, so an invoice that settled by
itself (which a mark must not change) ended up marked ``invalid``, both events sent. The
crediting transaction here is held open, the invoice row locked, while the mark is sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from satvault.events.models import OutboxEvent
from satvault.invoices import service
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import create, shop  # noqa: F401
from tests.waiting import lock_waiter


async def test_a_mark_waits_for_a_settlement_being_written_and_is_refused(
        lnenv: LnEnv, shop, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    env = lnenv
    engine = env.sessions.kw["bind"]
    held, release = asyncio.Event(), asyncio.Event()
    refresh = service.refresh

    async def slow_refresh(session: Any, inv: Any, **kw: Any) -> bool:
        changed = await refresh(session, inv, **kw)  # the status is settled, not committed
        held.set()
        await release.wait()
        return changed

    monkeypatch.setattr(service, "refresh", slow_refresh)  # apply_payment calls it
    async with api_client(env) as c:
        inv = (await create(c, shop, "race", amount="1000", currency="SATS",
                            payment_methods=["lightning"])).json()
        env.network.pay("customer1", inv["payment_methods"]["lightning"]["bolt11"])
        crediting = asyncio.create_task(env.runtime.listener.sweep())
        try:
            await asyncio.wait_for(held.wait(), 10)
            mark = asyncio.create_task(c.post(f"/api/v1/invoices/{inv['id']}/mark",
                                              headers=shop["key"], json={"status": "invalid"}))
            if engine.dialect.name == "postgresql":  # until the mark waits for the row lock
                await lock_waiter(engine, mark)
        finally:
            release.set()
        await asyncio.wait_for(crediting, 10)
        marked = await asyncio.wait_for(mark, 10)
        assert marked.status_code == 422, marked.text
        assert marked.json()["detail"] == "the invoice is already settled"
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
    assert (got["status"], got["additional_status"]) == ("settled", "none"), got
    async with env.sessions() as s:
        events = (await s.execute(select(OutboxEvent.type).where(
            OutboxEvent.subject_id == inv["id"]).order_by(OutboxEvent.id))).scalars().all()
    assert "invoice.invalid" not in events and "invoice.settled" in events, events
    await env.check()
