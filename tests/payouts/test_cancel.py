"""Cancelling a ``pending`` withdrawal: by its owner over the API (``withdrawals:write``,
idempotent), by an admin over the API or the CLI. Its hold is voided once, in the unit of
work that cancels it, with a ``withdrawal.cancelled`` event and an audit row. One the payout
job batched, or the Lightning payer took, is refused with 409 naming its state and nothing
changes; when the cancel and the job (or the payer) meet, whichever gets the row first
wins and the other sees what it did."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.audit.models import AuditEvent
from satvault.events.models import OutboxEvent
from satvault.ledger.models import LedgerTransfer
from satvault.lightning import payments as ln_payments
from satvault.lightning.models import LnPayment
from satvault.payouts import job as payout_job
from satvault.payouts.models import PayoutBatch, Withdrawal
from satvault.withdrawals import cancel as cancelling
from tests.chainenv import Env, LnEnv, api_client
from tests.lightning.test_lightning import customer_invoice, pay_out
from tests.lightning.test_lightning import fund as fund_ln
from tests.payouts.test_payouts import fund, withdraw
from tests.test_cli import last_json, sv_here
from tests.waiting import lock_waiter

SAT = 1000
RESERVE = 5_000
DEST = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"


async def keys_for(env: Env) -> dict[str, str]:
    async with env.sessions() as s, s.begin():
        _, full = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
        _, read = await acc.create_api_key(s, owner_id=env.wallet.owner_id,
                                           scopes=["wallet:read"])
        bob = await acc.create_user(s, email="bob@example.com")
        _, other = await acc.create_api_key(s, owner_id=bob.id, scopes=[
            "wallet:read", "withdrawals:write"])
        root = await acc.create_user(s, email="root@example.com", is_admin=True)
        _, admin = await acc.create_api_key(s, owner_id=root.id, scopes=["admin"])
    return {"full": full, "read": read, "other": other, "admin": admin, "root": root.id}


def h(key: str, idem: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **({"Idempotency-Key": idem} if idem else {})}


def url(wd_id: str) -> str:
    return f"/api/v1/withdrawals/{wd_id}/cancel"


async def trail(env: Env, wd_id: str) -> dict[str, Any]:
    """What a cancel leaves: the void transfers, the cancelled events, the audit rows."""
    async with env.sessions() as s:
        voids = (await s.execute(select(func.count()).select_from(LedgerTransfer).where(
            LedgerTransfer.id == f"wd:{wd_id}:void"))).scalar_one()
        events = (await s.execute(select(OutboxEvent.type).where(
            OutboxEvent.subject_id == wd_id).order_by(OutboxEvent.id))).scalars().all()
        audit = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "withdrawal.cancelled",
            AuditEvent.object == f"withdrawal:{wd_id}"))).scalars().all()
        wd = await s.get(Withdrawal, wd_id)
    assert wd is not None
    return {"voids": voids, "events": list(events), "audit": list(audit),
            "status": wd.status.value}


async def test_the_owner_cancels_a_pending_onchain_withdrawal(env: Env):
    await fund(env, 200_000)
    k = await keys_for(env)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers=h(k["full"], "w1"),
                         json={"destination": DEST, "amount_msat": 50_000 * SAT})
        assert r.status_code == 201 and r.json()["status"] == "pending", r.text
        wd = r.json()["id"]
        assert (await env.balances())["held"] == (50_000 + RESERVE) * SAT
        # someone else's is answered like a missing one; a read key may not; a key is needed
        assert (await c.post(url(wd), headers=h(k["other"], "c"))).status_code == 404
        assert (await c.post(url("wd_nope"), headers=h(k["full"], "c0"))).status_code == 404
        assert (await c.post(url(wd), headers=h(k["read"], "c"))).status_code == 403
        assert (await c.post(url(wd), headers=h(k["full"]))).status_code == 422
        assert (await trail(env, wd))["status"] == "pending"

        done = await c.post(url(wd), headers=h(k["full"], "c1"),
                            json={"reason": "wrong address"})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "cancelled" and done.json()["id"] == wd
        replay = await c.post(url(wd), headers=h(k["full"], "c1"),
                              json={"reason": "wrong address"})
        assert replay.status_code == 200 and replay.content == done.content
        assert replay.headers["idempotent-replayed"] == "true"
        again = await c.post(url(wd), headers=h(k["full"], "c2"))
        assert again.status_code == 409, again.text
        problem = again.json()
        assert problem["title"] == "cannot cancel"
        assert problem["withdrawal_status"] == "cancelled"
        assert "cancelled" in again.json()["detail"]
        got = (await c.get(f"/api/v1/withdrawals/{wd}", headers=h(k["read"]))).json()
        assert got["status"] == "cancelled"
    b = await env.balances()
    assert b["held"] == 0 and b["available"] == 200_000 * SAT
    left = await trail(env, wd)
    assert left["voids"] == 1
    assert left["events"] == ["withdrawal.created", "withdrawal.cancelled"]
    (row,) = left["audit"]
    assert row.actor == f"user:{env.wallet.owner_id}"
    assert json.loads(row.state_after)["reason"] == "wrong address"
    # the payout job has nothing to pay
    assert await env.runtime.payouts.create_batch() == 0
    await env.check()


async def test_a_batched_withdrawal_is_not_cancelled(env: Env):
    await fund(env, 200_000)
    k = await keys_for(env)
    wd = await withdraw(env, DEST, 50_000)
    assert await env.runtime.payouts.create_batch() == 1
    before = await env.balances()
    async with api_client(env) as c:
        r = await c.post(url(wd.id), headers=h(k["full"], "c1"))
        assert r.status_code == 409, r.text
        assert r.json()["withdrawal_status"] == "batched" and "batched" in r.json()["detail"]
        # an admin is refused the same way
        r = await c.post(url(wd.id), headers=h(k["admin"], "c2"))
        assert r.status_code == 409 and r.json()["withdrawal_status"] == "batched"
    assert await env.balances() == before
    left = await trail(env, wd.id)
    assert (left["status"], left["voids"], left["audit"]) == ("batched", 0, [])
    assert "withdrawal.cancelled" not in left["events"]
    await env.check()


async def test_an_admin_cancels_over_the_api_and_the_command_line(env: Env, db_url, tmp_path):
    await fund(env, 200_000)
    k = await keys_for(env)
    first = await withdraw(env, DEST, 30_000)
    second = await withdraw(env, DEST, 40_000)
    async with api_client(env) as c:
        r = await c.post(url(first.id), headers=h(k["admin"], "a1"))
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    refused = sv_here("withdrawals", "cancel", second.id, "--as", env.wallet.owner_id,
                      url=db_url, home=tmp_path, check=False)
    assert refused.returncode == 1 and "not an admin" in last_json(refused)["error"]
    out = last_json(sv_here("withdrawals", "cancel", second.id, "--as", "root@example.com",
                            "--reason", "customer asked by phone", url=db_url,
                            home=tmp_path))
    assert out["ok"] and out["status"] == "cancelled" and out["withdrawal_id"] == second.id
    twice = sv_here("withdrawals", "cancel", second.id, "--as", "root@example.com",
                    url=db_url, home=tmp_path, check=False)
    assert twice.returncode == 1 and "cancelled" in last_json(twice)["error"]
    for wd in (first, second):
        left = await trail(env, wd.id)
        assert (left["status"], left["voids"]) == ("cancelled", 1)
        assert [a.actor for a in left["audit"]] == [f"user:{k['root']}"]
    assert (await env.balances())["available"] == 200_000 * SAT
    await env.check()


async def test_the_payout_job_batching_first_wins_and_the_cancel_is_refused(
        env: Env, monkeypatch: pytest.MonkeyPatch):
    await fund(env, 200_000)
    k = await keys_for(env)
    wd = await withdraw(env, DEST, 50_000)
    engine = env.sessions.kw["bind"]
    held, release = asyncio.Event(), asyncio.Event()
    store = payout_job.store_batch

    async def slow_store(*args: Any, **kw: Any) -> Any:  # the withdrawal rows are locked
        batch = await store(*args, **kw)
        held.set()
        await release.wait()
        return batch

    monkeypatch.setattr(payout_job, "store_batch", slow_store)
    async with api_client(env) as c:
        batching = asyncio.create_task(env.runtime.payouts.create_batch())
        try:
            await asyncio.wait_for(held.wait(), 10)
            cancel = asyncio.create_task(c.post(url(wd.id), headers=h(k["full"], "c1")))
            if engine.dialect.name == "postgresql":  # until the cancel waits for the row
                await lock_waiter(engine, cancel)
        finally:
            release.set()
        assert await asyncio.wait_for(batching, 10) == 1
        r = await asyncio.wait_for(cancel, 10)
    assert r.status_code == 409, r.text
    assert r.json()["withdrawal_status"] == "batched"
    left = await trail(env, wd.id)
    assert (left["status"], left["voids"], left["audit"]) == ("batched", 0, [])
    assert (await env.balances())["held"] == (50_000 + RESERVE) * SAT
    await env.check()


async def test_the_cancel_first_wins_and_the_payout_job_batches_nothing(
        env: Env, monkeypatch: pytest.MonkeyPatch):
    await fund(env, 200_000)
    k = await keys_for(env)
    wd = await withdraw(env, DEST, 50_000)
    held, release = asyncio.Event(), asyncio.Event()
    record = cancelling.record

    async def slow_record(*args: Any, **kw: Any) -> None:  # cancelled, voided, not committed
        await record(*args, **kw)
        held.set()
        await release.wait()

    monkeypatch.setattr(cancelling, "record", slow_record)
    async with api_client(env) as c:
        cancel = asyncio.create_task(c.post(url(wd.id), headers=h(k["full"], "c1")))
        try:
            await asyncio.wait_for(held.wait(), 10)
            # PostgreSQL: the job skips the locked row; SQLite: it waits for the one writer
            batching = asyncio.create_task(env.runtime.payouts.create_batch())
            if env.sessions.kw["bind"].dialect.name == "postgresql":
                assert await asyncio.wait_for(batching, 10) == 0
        finally:
            release.set()
        r = await asyncio.wait_for(cancel, 10)
        assert await asyncio.wait_for(batching, 70) == 0
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert await env.runtime.payouts.create_batch() == 0
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(PayoutBatch).where(
            PayoutBatch.kind == "payout"))).scalar_one() == 0
    left = await trail(env, wd.id)
    assert (left["status"], left["voids"], len(left["audit"])) == ("cancelled", 1, 1)
    assert (await env.balances())["held"] == 0
    await env.check()


async def test_the_lightning_payer_claiming_first_wins_and_the_cancel_is_refused(
        lnenv: LnEnv, monkeypatch: pytest.MonkeyPatch):
    env = lnenv
    await fund_ln(env, env.wallet, 100_000 * SAT)
    k = await keys_for(env)
    wd = await pay_out(env, customer_invoice(env, 10_000 * SAT))
    assert wd.status == "pending"
    engine = env.sessions.kw["bind"]
    held, release = asyncio.Event(), asyncio.Event()
    emit = ln_payments.emit_withdrawal

    async def slow_emit(session: Any, w: Any, event: str) -> None:
        await emit(session, w, event)
        if event == "broadcast" and not held.is_set():  # the claim, not committed
            held.set()
            await release.wait()

    monkeypatch.setattr(ln_payments, "emit_withdrawal", slow_emit)
    async with api_client(env) as c:
        await env.runtime.payer.dispatch()  # its task claims the payment, then waits
        try:
            await asyncio.wait_for(held.wait(), 10)
            cancel = asyncio.create_task(c.post(url(wd.id), headers=h(k["full"], "c1")))
            if engine.dialect.name == "postgresql":
                await lock_waiter(engine, cancel)
        finally:
            release.set()
        r = await asyncio.wait_for(cancel, 10)
        await env.runtime.payer.drain()
    assert r.status_code == 409, r.text
    assert r.json()["withdrawal_status"] in ("broadcast", "confirmed")
    left = await trail(env, wd.id)
    assert left["status"] == "confirmed" and left["voids"] == 0 and left["audit"] == []
    b = await env.balances()
    assert b["held"] == 0 and b["available"] < (100_000 - 10_000) * SAT + 1
    await env.check()


async def test_the_cancel_first_wins_and_the_lightning_payer_sends_nothing(
        lnenv: LnEnv, monkeypatch: pytest.MonkeyPatch):
    env = lnenv
    await fund_ln(env, env.wallet, 100_000 * SAT)
    k = await keys_for(env)
    bolt11 = customer_invoice(env, 10_000 * SAT)
    wd = await pay_out(env, bolt11)
    engine = env.sessions.kw["bind"]
    held, release = asyncio.Event(), asyncio.Event()
    record = cancelling.record

    async def slow_record(*args: Any, **kw: Any) -> None:
        await record(*args, **kw)
        held.set()
        await release.wait()

    monkeypatch.setattr(cancelling, "record", slow_record)
    async with api_client(env) as c:
        cancel = asyncio.create_task(c.post(url(wd.id), headers=h(k["full"], "c1")))
        try:
            await asyncio.wait_for(held.wait(), 10)
            paying = asyncio.create_task(env.runtime.payer.step())
            if engine.dialect.name == "postgresql":  # the claim waits for the payment row
                await lock_waiter(engine, paying)
        finally:
            release.set()
        r = await asyncio.wait_for(cancel, 10)
        await asyncio.wait_for(paying, 70)
        await env.runtime.payer.drain()
        await env.runtime.payer.step()
        await env.runtime.payer.drain()
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    async with env.sessions() as s:
        (payment,) = (await s.execute(select(LnPayment).where(
            LnPayment.withdrawal_id == wd.id))).scalars().all()
    assert payment.status == "failed"
    payment_hash = env.network.decode(bolt11).payment_hash
    assert env.network.payment("platform", payment_hash) is None  # never sent
    assert env.network.lookup_invoice("customer2", payment_hash).state == "OPEN"
    left = await trail(env, wd.id)
    assert (left["status"], left["voids"], len(left["audit"])) == ("cancelled", 1, 1)
    assert left["events"] == ["withdrawal.created", "withdrawal.cancelled"]
    b = await env.balances()
    assert b["held"] == 0 and b["available"] == 100_000 * SAT
    await env.check()
