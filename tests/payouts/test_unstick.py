"""Resolving a ``stuck`` payout batch (``satvault payouts resolve``, ``POST
/api/v1/admin/payout-batches/{id}/resolve``), each way refused with nothing changed unless
the chain proves it safe:

* ``paid-by TXID``: a confirmed transaction pays every withdrawal of the batch (the
  ``PaidBefore`` case: a restored database batched again a withdrawal an earlier transaction
  paid); the holds are posted as for a normal confirmation, with TXID's fee;
* ``requeue`` / ``return``: no version of the batch can confirm any more (none is known to
  the node and an input is spent by a confirmed transaction, or none was ever signed); the
  withdrawals go back to ``pending``, or are cancelled with their holds voided.

Two resolutions of one batch at once: exactly one happens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from satvault.accounts import service as acc
from satvault.audit.models import AuditEvent
from satvault.events.models import OutboxEvent
from satvault.ledger.models import LedgerTransfer
from satvault.onchain.models import OnchainPayment, ReviewItem
from satvault.payouts.models import PayoutBatch, PayoutInput, PayoutTx, Withdrawal
from satvault.reconcile import stuck as resolving
from satvault.signer.server import start_server
from satvault.withdrawals.cancel import cancel_pending
from tests.chainenv import Env, api_client
from tests.payouts.test_paid_once import add_coin, forget_the_payout, signer_log
from tests.payouts.test_payouts import (
    PAYOUTS,
    RESERVE,
    SAT,
    external_address,
    fund,
    received,
    withdraw,
)
from tests.test_cli import last_json, sv_here
from tests.waiting import lock_waiter


async def admin(env: Env) -> tuple[str, str, str]:
    """An admin user's key and id, and a key of the customer (not an admin)."""
    async with env.sessions() as s, s.begin():
        root = await acc.create_user(s, email="root@example.com", is_admin=True)
        _, key = await acc.create_api_key(s, owner_id=root.id, scopes=["admin"])
        _, plain = await acc.create_api_key(s, owner_id=env.wallet.owner_id,
                                            scopes=["wallet:read"])
    return key, root.id, plain


def h(key: str, idem: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **({"Idempotency-Key": idem} if idem else {})}


def url(batch_id: str) -> str:
    return f"/api/v1/admin/payout-batches/{batch_id}/resolve"


async def cli(env: Env, db_url: str, tmp_path: Path, *args: str) -> Any:
    """``satvault payouts resolve …`` against this environment's node and signer (over its
    socket, served here: the command runs in a thread with its own loop)."""
    sock = tmp_path / "s.sock"
    server = await start_server(sock, env.signer)
    try:
        return await asyncio.to_thread(
            sv_here, "payouts", "resolve", *args, url=db_url, home=tmp_path, check=False,
            env={"SATVAULT_CHAIN_BACKEND": "bitcoind", "SATVAULT_BITCOIND_URL": env.server.url,
                 "SATVAULT_NETWORK": "regtest", "SATVAULT_LIGHTNING_BACKEND": "none",
                 "SATVAULT_SIGNER_SOCKET": str(sock), "SATVAULT_PAYOUT_CONFIRMATIONS": "1"})
    finally:
        server.close()
        await server.wait_closed()


async def state(env: Env, batch_id: str, *wd_ids: str) -> dict[str, Any]:
    """What a resolution changes, to compare before and after (the batch's withdrawals:
    ``wd_ids``)."""
    async with env.sessions() as s:
        b = await s.get(PayoutBatch, batch_id)
        assert b is not None
        wds = (await s.execute(select(Withdrawal).where(Withdrawal.id.in_(wd_ids))
                               .order_by(Withdrawal.id))).scalars().all()
        items = (await s.execute(select(ReviewItem).where(
            ReviewItem.subject == batch_id, ReviewItem.kind == "payout_stuck"))).scalars().all()
        audit = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "payout_batch.resolved",
            AuditEvent.object == f"payout_batch:{batch_id}"))).scalars().all()
        inputs = (await s.execute(select(func.count()).select_from(PayoutInput).where(
            PayoutInput.batch_id == batch_id))).scalar_one()
        transfers = (await s.execute(select(func.count()).select_from(LedgerTransfer)
                                     )).scalar_one()
    return {"status": b.status.value, "txid": b.txid, "inputs": inputs,
            "withdrawals": [(w.id, w.status.value, w.txid) for w in wds],
            "open_items": [i.id for i in items if i.resolved_at is None],
            "audit": [(a.actor, json.loads(a.state_after)) for a in audit],
            "transfers": transfers, "balances": await env.balances()}


async def paid_before_stuck(env: Env) -> tuple[Withdrawal, str, int, str]:
    """As after a restore (tests/payouts/test_paid_once.py): a withdrawal paid by a
    confirmed payout the database forgot, batched again and refused by the signer. The
    withdrawal, the earlier payout's txid and fee, the stuck batch."""
    await fund(env, 900_000)
    wd = await withdraw(env, external_address(env, 5), 100_000)
    assert (await env.runtime.payouts.step()).broadcast == 1
    async with env.sessions() as s:
        first = (await s.execute(PAYOUTS)).scalar_one()
    await forget_the_payout(env, wd.id)
    await add_coin(env, 2_000_000)  # mines the first payout too
    report = await env.runtime.payouts.step()
    assert report.stuck == 1, report
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    assert batch.status == "stuck"
    assert first.txid is not None
    return wd, first.txid, first.fee_sat, batch.id


async def conflict_stuck(env: Env) -> tuple[Withdrawal, str, str, str]:
    """A batch the node rejected because its coin is spent by a transaction the database
    does not know (in the mempool, not confirmed): a payout of another withdrawal, forgotten
    by a restore, whose withdrawal was then cancelled. The withdrawal, its destination, the
    unknown spender, the stuck batch."""
    await fund(env, 900_000)
    other = await withdraw(env, external_address(env, 7), 100_000)
    assert (await env.runtime.payouts.step()).broadcast == 1
    async with env.sessions() as s:
        spender = (await s.execute(PAYOUTS)).scalar_one().txid
    await forget_the_payout(env, other.id)
    async with env.sessions() as s, s.begin():
        await s.execute(update(OnchainPayment).values(spent_by=None))  # as in the backup
        await cancel_pending(s, withdrawal_id=other.id, actor="system")
    dest = external_address(env, 8)
    wd = await withdraw(env, dest, 50_000)
    report = await env.runtime.payouts.step()
    assert (report.signed, report.broadcast, report.stuck) == (1, 0, 1), report
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
        versions = (await s.execute(select(PayoutTx.txid).where(
            PayoutTx.batch_id == batch.id))).scalars().all()
    assert batch.status == "stuck" and len(versions) == 1
    assert spender is not None
    return wd, dest, spender, batch.id


async def test_paid_by_books_the_payment_a_restored_database_forgot(env: Env, db_url,
                                                                    tmp_path):
    wd, first, fee, batch_id = await paid_before_stuck(env)
    async with env.sessions() as s:
        sweep_txid = (await s.execute(select(PayoutBatch.txid).where(
            PayoutBatch.kind == "sweep").order_by(PayoutBatch.created_at.desc()).limit(1))
        ).scalar_one()
    await admin(env)
    before = await state(env, batch_id, wd.id)
    assert len(before["open_items"]) == 1

    refusals = [
        (("--paid-by", first, "--as", "alice@example.com", "--note", "x"), "not an admin"),
        (("--paid-by", "ab" * 32, "--as", "root@example.com", "--note", "x"),
         "not known to the node"),
        (("--paid-by", sweep_txid, "--as", "root@example.com", "--note", "x"),
         f"does not pay {wd.id}"),
        (("--return", "--as", "root@example.com", "--note", "x"), f"--paid-by {first}"),
        (("--requeue", "--as", "root@example.com", "--note", "x"), f"--paid-by {first}"),
        (("--paid-by", first, "--as", "root@example.com", "--note", " "), "note"),
    ]
    for args, says in refusals:
        out = await cli(env, db_url, tmp_path, batch_id, *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert says in last_json(out)["error"], (args, last_json(out))
        assert await state(env, batch_id, wd.id) == before
    both = await cli(env, db_url, tmp_path, batch_id, "--requeue", "--paid-by", first,
                     "--as", "root@example.com", "--note", "x")
    assert both.returncode != 0 and await state(env, batch_id, wd.id) == before

    done = await cli(env, db_url, tmp_path, batch_id, "--paid-by", first, "--as",
                     "root@example.com", "--note", "paid before the restore")
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = last_json(done)
    assert out["ok"] and out["batch"]["status"] == "confirmed" and out["batch"]["txid"] == first
    after = await state(env, batch_id, wd.id)
    assert after["status"] == "confirmed" and after["txid"] == first
    assert after["withdrawals"] == [(wd.id, "confirmed", first)]
    assert after["open_items"] == [] and after["inputs"] == 0  # its own coin is free again
    ((actor, audited),) = after["audit"]
    assert actor.startswith("user:") and audited["action"] == "paid_by"
    assert audited["note"] == "paid before the restore"
    async with env.sessions() as s:
        w = await s.get(Withdrawal, wd.id)
        events = (await s.execute(select(OutboxEvent.type).where(
            OutboxEvent.subject_id == wd.id))).scalars().all()
        item = (await s.execute(select(ReviewItem).where(
            ReviewItem.subject == batch_id))).scalar_one()
    assert w is not None and w.fee_msat == fee * SAT
    assert events.count("withdrawal.confirmed") == 1
    assert item.resolution == "paid before the restore" and item.resolved_by == actor
    b = after["balances"]
    assert b["held"] == 0
    assert b["posted"] == (900_000 + 2_000_000 - 100_000 - min(fee, RESERVE)) * SAT
    again = await cli(env, db_url, tmp_path, batch_id, "--paid-by", first, "--as",
                      "root@example.com", "--note", "twice")
    assert again.returncode == 1 and "confirmed" in last_json(again)["error"]

    # The job goes on, and the coin the stuck batch held pays the next withdrawal.
    dest = external_address(env, 9)
    await withdraw(env, dest, 200_000)
    assert (await env.runtime.payouts.step()).broadcast == 1
    env.chain.mine(1)
    await env.runtime.watcher.step()
    report = await env.runtime.payouts.step()
    assert report.confirmed == 1 and not report.errors, report
    assert await received(env, dest) == 200_000
    await env.check()


async def test_requeue_waits_until_the_chain_proves_no_version_can_confirm(env: Env):
    wd, dest, spender, batch_id = await conflict_stuck(env)
    key, _, plain = await admin(env)
    before = await state(env, batch_id, wd.id)
    body = {"action": "requeue", "note": "the coin went elsewhere"}
    async with api_client(env) as c:
        assert (await c.post(url(batch_id), headers=h(key), json=body)).status_code == 422
        assert (await c.post(url(batch_id), headers=h(plain, "k0"), json=body)
                ).status_code == 403
        assert (await c.post(url("pob_nope"), headers=h(key, "k1"), json=body)
                ).status_code == 404
        for action in ("requeue", "return"):
            r = await c.post(url(batch_id), headers=h(key, f"early-{action}"),
                             json={**body, "action": action})
            assert r.status_code == 409, r.text
            assert r.json()["title"] == "cannot resolve batch"
            assert "confirmed" in r.json()["detail"], r.json()
        r = await c.post(url(batch_id), headers=h(key, "early-paid"),
                         json={"action": "paid_by", "txid": spender, "note": "x"})
        assert r.status_code == 409 and "confirm" in r.json()["detail"], r.text
        assert await state(env, batch_id, wd.id) == before

        env.chain.mine(1)  # the unknown spender confirms: no version of the batch can now
        r = await c.post(url(batch_id), headers=h(key, "go"), json=body)
        assert r.status_code == 200, r.text
        assert r.json()["batch"]["status"] == "abandoned"
        assert r.json()["withdrawals"] == [{"id": wd.id, "status": "pending"}]
        replay = await c.post(url(batch_id), headers=h(key, "go"), json=body)
        assert replay.content == r.content and replay.headers["idempotent-replayed"] == "true"
    async with env.sessions() as s:
        (version,) = (await s.execute(select(PayoutTx.txid).where(
            PayoutTx.batch_id == batch_id))).scalars().all()
    line = signer_log(env)[-1]
    assert (line["event"], line["txid"]) == ("abandoned", version)
    after = await state(env, batch_id, wd.id)
    assert after["withdrawals"] == [(wd.id, "pending", None)] and after["inputs"] == 0
    assert after["open_items"] == [] and len(after["audit"]) == 1
    assert after["balances"]["held"] == (50_000 + RESERVE) * SAT  # still held, not released

    await add_coin(env, 2_000_000)  # paid again, from another coin
    report = await env.runtime.payouts.step()
    assert (report.signed, report.broadcast, report.stuck) == (1, 1, 0), report
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    assert await received(env, dest) == 50_000
    assert (await env.balances())["held"] == 0
    await env.check()


async def test_return_cancels_the_withdrawals_once_no_version_can_confirm(env: Env, db_url,
                                                                          tmp_path):
    wd, _, _, batch_id = await conflict_stuck(env)
    await admin(env)
    before = await state(env, batch_id, wd.id)
    args = ("--return", "--as", "root@example.com", "--note", "customer asked")
    early = await cli(env, db_url, tmp_path, batch_id, *args)
    assert early.returncode == 1 and "confirmed" in last_json(early)["error"]
    assert await state(env, batch_id, wd.id) == before

    env.chain.mine(1)
    done = await cli(env, db_url, tmp_path, batch_id, *args)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert last_json(done)["withdrawals"] == [{"id": wd.id, "status": "cancelled"}]
    after = await state(env, batch_id, wd.id)
    assert after["status"] == "abandoned" and after["inputs"] == 0
    assert after["open_items"] == [] and [a["action"] for _, a in after["audit"]] == ["return"]
    async with env.sessions() as s:
        w = await s.get(Withdrawal, wd.id)
        voids = (await s.execute(select(func.count()).select_from(LedgerTransfer).where(
            LedgerTransfer.id == f"wd:{wd.id}:void"))).scalar_one()
        events = (await s.execute(select(OutboxEvent.type).where(
            OutboxEvent.subject_id == wd.id).order_by(OutboxEvent.id))).scalars().all()
    assert w is not None and w.status == "cancelled" and voids == 1
    assert events[-1] == "withdrawal.cancelled"
    assert after["balances"]["held"] == 0
    assert await env.runtime.payouts.create_batch() == 0  # nothing to pay
    await env.check()


async def test_two_resolutions_at_once_one_happens(env: Env, monkeypatch: pytest.MonkeyPatch):
    wd, _, _, batch_id = await conflict_stuck(env)
    env.chain.mine(1)
    key, _, _ = await admin(env)
    held, release = asyncio.Event(), asyncio.Event()
    record = resolving.record

    async def slow_record(*args: Any, **kw: Any) -> None:  # resolved, not committed
        await record(*args, **kw)
        if not held.is_set():
            held.set()
            await release.wait()

    monkeypatch.setattr(resolving, "record", slow_record)
    engine = env.sessions.kw["bind"]
    async with api_client(env) as c:
        first = asyncio.create_task(c.post(url(batch_id), headers=h(key, "a"), json={
            "action": "return", "note": "give it back"}))
        try:
            await asyncio.wait_for(held.wait(), 10)
            second = asyncio.create_task(c.post(url(batch_id), headers=h(key, "b"), json={
                "action": "requeue", "note": "try again"}))
            if engine.dialect.name == "postgresql":  # until it waits for the batch's row
                await lock_waiter(engine, second, query_like="UPDATE payout_batches%")
        finally:
            release.set()
        won = await asyncio.wait_for(first, 10)
        lost = await asyncio.wait_for(second, 70)
    assert won.status_code == 200, won.text
    assert lost.status_code == 409 and "abandoned" in lost.json()["detail"], lost.text
    after = await state(env, batch_id, wd.id)
    assert after["withdrawals"] == [(wd.id, "cancelled", None)]
    assert [a["action"] for _, a in after["audit"]] == ["return"]
    assert after["balances"]["held"] == 0
    await env.check()


async def test_a_paid_by_transaction_reorged_out_is_told_not_sent(env: Env, db_url, tmp_path):
    """satvault holds no bytes of a transaction a person booked the batch as paid by: if a
    reorg takes it out of the chain and of the mempool, a person is told once (the books
    keep it), and the job goes on."""
    wd, first, _, batch_id = await paid_before_stuck(env)
    await admin(env)
    done = await cli(env, db_url, tmp_path, batch_id, "--paid-by", first, "--as",
                     "root@example.com", "--note", "paid before the restore")
    assert done.returncode == 0, (done.stdout, done.stderr)
    status = await env.runtime.backend.transaction(first)
    assert status is not None
    env.chain.reorg(status.confirmations, drop_txids=[first])
    assert await env.runtime.backend.transaction(first) is None
    for _ in range(2):
        report = await env.runtime.payouts.step()
        assert any("no copy" in e for e in report.errors), report
    async with env.sessions() as s:
        items = (await s.execute(select(ReviewItem).where(
            ReviewItem.subject == batch_id, ReviewItem.kind == "payout_reorged_rejected"))
        ).scalars().all()
        w = await s.get(Withdrawal, wd.id)
    assert len(items) == 1 and w is not None and w.status == "confirmed"
    await env.check()


async def lost_payer_stuck(env: Env) -> tuple[Withdrawal, str, str, str]:
    """As after a restore whose earlier payout never confirmed and left the node (a reorg
    dropped it, or its mempool evicted it): the signer still remembers it paying the
    withdrawal (``PaidBefore``), and its coin is unspent again. The withdrawal, its
    destination, the earlier payout's txid, the stuck batch."""
    await fund(env, 900_000)
    dest = external_address(env, 5)
    wd = await withdraw(env, dest, 100_000)
    assert (await env.runtime.payouts.step()).broadcast == 1
    async with env.sessions() as s:
        lost = (await s.execute(PAYOUTS)).scalar_one().txid
    assert lost is not None
    await forget_the_payout(env, wd.id)
    async with env.sessions() as s, s.begin():
        await s.execute(update(OnchainPayment).values(spent_by=None))  # as in the backup
    env.chain.reorg(1, drop_txids=[lost])
    assert await env.runtime.backend.transaction(lost) is None
    await add_coin(env, 2_000_000)  # the largest coin: the next batch spends it, not lost's
    report = await env.runtime.payouts.step()
    assert report.stuck == 1, report
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    assert batch.status == "stuck" and lost in (batch.last_error or "")
    return wd, dest, lost, batch.id


async def test_requeue_gives_the_earlier_payer_up_at_the_signer_once_it_cannot_confirm(
        env: Env, db_url, tmp_path):
    wd, dest, lost, batch_id = await lost_payer_stuck(env)
    await admin(env)
    before, lines = await state(env, batch_id, wd.id), len(signer_log(env))
    # The node does not know the earlier payer, but its coin is unspent: anyone holding its
    # bytes could still have it mined, paying the withdrawal. Neither way is safe yet.
    for action in ("--requeue", "--return"):
        out = await cli(env, db_url, tmp_path, batch_id, action, "--as", "root@example.com",
                        "--note", "lost in the restore")
        assert out.returncode == 1, (action, out.stdout, out.stderr)
        error = last_json(out)["error"]
        assert lost in error and "could still confirm" in error, error
        assert await state(env, batch_id, wd.id) == before
        assert len(signer_log(env)) == lines  # nothing given up at the signer

    # Another withdrawal spends the earlier payer's coin, and confirms: it never can now.
    other = external_address(env, 6)
    await withdraw(env, other, 300_000)
    report = await env.runtime.payouts.step()
    assert report.broadcast == 1, report
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    assert await received(env, other) == 300_000

    done = await cli(env, db_url, tmp_path, batch_id, "--requeue", "--as", "root@example.com",
                     "--note", "lost in the restore")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert last_json(done)["withdrawals"] == [{"id": wd.id, "status": "pending"}]
    assert lost in last_json(done)["proof"]
    line = signer_log(env)[-1]
    assert (line["event"], line["txid"]) == ("abandoned", lost)
    after = await state(env, batch_id, wd.id)
    assert after["status"] == "abandoned" and after["open_items"] == []
    assert [a["action"] for _, a in after["audit"]] == ["requeue"]

    # The next pass pays it, from other coins, with no one at the signer.
    report = await env.runtime.payouts.step()
    assert (report.signed, report.broadcast, report.stuck) == (1, 1, 0), report
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    assert await received(env, dest) == 100_000
    assert (await env.balances())["held"] == 0
    await env.check()


async def partly_paid_stuck(env: Env) -> dict[str, Any]:
    """As after a restore: an earlier payout P paid wd1 and wd3, then the database forgot it;
    wd3 was cancelled meanwhile (its output in P is no withdrawal of the stuck batch), and a
    new wd2 was batched with wd1 again, refused by the signer (``PaidBefore``)."""
    await fund(env, 900_000)
    dest1, dest2, dest3 = (external_address(env, i) for i in (5, 6, 7))
    wd1 = await withdraw(env, dest1, 100_000)
    wd3 = await withdraw(env, dest3, 70_000)
    assert (await env.runtime.payouts.step()).broadcast == 1
    async with env.sessions() as s:
        first = (await s.execute(PAYOUTS)).scalar_one()
    assert first.txid is not None
    async with env.sessions() as s, s.begin():
        await s.execute(update(Withdrawal).where(Withdrawal.id == wd3.id).values(
            status="pending", batch_id=None, txid=None))
    await forget_the_payout(env, wd1.id)
    async with env.sessions() as s, s.begin():
        await cancel_pending(s, withdrawal_id=wd3.id, actor="system")
    await add_coin(env, 2_000_000)  # mines P too
    wd2 = await withdraw(env, dest2, 50_000)
    report = await env.runtime.payouts.step()
    assert report.stuck == 1, report
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    assert batch.status == "stuck"
    return {"wd1": wd1, "wd2": wd2, "dest2": dest2, "p": first.txid, "fee": first.fee_sat,
            "batch": batch.id}


async def test_paid_by_some_books_them_and_requeues_the_rest_on_an_explicit_choice(
        env: Env, db_url, tmp_path):
    x = await partly_paid_stuck(env)
    wd1, wd2, p, batch_id = x["wd1"], x["wd2"], x["p"], x["batch"]
    await admin(env)
    before = await state(env, batch_id, wd1.id, wd2.id)
    who = ("--as", "root@example.com", "--note", "P paid wd1 before the restore")
    for args, says in [(("--paid-by", p), f"does not pay {wd2.id}"),
                       (("--paid-by", p), "--rest"),
                       (("--requeue",), f"--paid-by {p}")]:
        out = await cli(env, db_url, tmp_path, batch_id, *args, *who)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert says in last_json(out)["error"], (args, last_json(out))
    bad = await cli(env, db_url, tmp_path, batch_id, "--paid-by", p, "--rest", "keep", *who)
    rest_alone = await cli(env, db_url, tmp_path, batch_id, "--requeue", "--rest", "return",
                           *who)
    assert bad.returncode != 0 and rest_alone.returncode != 0
    assert await state(env, batch_id, wd1.id, wd2.id) == before

    done = await cli(env, db_url, tmp_path, batch_id, "--paid-by", p, "--rest", "requeue",
                     *who)
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = last_json(done)
    # P's fee is split equally over its payments (wd1 here, and wd3's output, which is no
    # withdrawal of this batch); its change is ours and bears none. This batch books wd1's.
    share = x["fee"] // 2
    assert out["batch"] == {"id": batch_id, "status": "confirmed", "txid": p, "fee_sat": share}
    assert out["withdrawals"] == [{"id": wd1.id, "status": "confirmed"}]
    assert out["rest"] == {"action": "requeue",
                           "withdrawals": [{"id": wd2.id, "status": "pending"}]}
    assert out["fee"] == {"total_sat": x["fee"], "payments": 2, "booked_sat": share}
    after = await state(env, batch_id, wd1.id, wd2.id)
    assert after["withdrawals"] == sorted([(wd1.id, "confirmed", p), (wd2.id, "pending", None)])
    assert after["open_items"] == [] and after["inputs"] == 0
    ((_, audited),) = after["audit"]
    assert audited["action"] == "paid_by" and audited["rest"]["action"] == "requeue"
    async with env.sessions() as s:
        w1 = await s.get(Withdrawal, wd1.id)
    assert w1 is not None and w1.fee_msat == share * SAT
    assert (await env.balances())["held"] == (50_000 + RESERVE) * SAT  # wd2's, still held

    # wd2 is paid by the next pass, with no one at the signer.
    report = await env.runtime.payouts.step()
    assert (report.signed, report.broadcast, report.stuck) == (1, 1, 0), report
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    assert await received(env, x["dest2"]) == 50_000
    assert (await env.balances())["held"] == 0
    await env.check()


async def test_paid_by_some_returns_the_rest_and_two_admins_at_once_one_happens(
        env: Env, monkeypatch: pytest.MonkeyPatch):
    x = await partly_paid_stuck(env)
    wd1, wd2, p, batch_id = x["wd1"], x["wd2"], x["p"], x["batch"]
    key, _, _ = await admin(env)
    held, release = asyncio.Event(), asyncio.Event()
    record = resolving.record

    async def slow_record(*args: Any, **kw: Any) -> None:  # resolved, not committed
        await record(*args, **kw)
        if not held.is_set():
            held.set()
            await release.wait()

    monkeypatch.setattr(resolving, "record", slow_record)
    engine = env.sessions.kw["bind"]
    async with api_client(env) as c:
        r = await c.post(url(batch_id), headers=h(key, "r0"), json={
            "action": "requeue", "rest": "return", "note": "x"})
        assert r.status_code == 422, r.text  # rest goes with paid_by only
        first = asyncio.create_task(c.post(url(batch_id), headers=h(key, "a"), json={
            "action": "paid_by", "txid": p, "rest": "return", "note": "wd2 back"}))
        try:
            await asyncio.wait_for(held.wait(), 10)
            second = asyncio.create_task(c.post(url(batch_id), headers=h(key, "b"), json={
                "action": "paid_by", "txid": p, "rest": "requeue", "note": "wd2 again"}))
            if engine.dialect.name == "postgresql":  # until it waits for the batch's row
                await lock_waiter(engine, second, query_like="UPDATE payout_batches%")
        finally:
            release.set()
        won = await asyncio.wait_for(first, 10)
        lost = await asyncio.wait_for(second, 70)
    assert won.status_code == 200, won.text
    assert won.json()["rest"]["withdrawals"] == [{"id": wd2.id, "status": "cancelled"}]
    assert lost.status_code == 409 and "confirmed" in lost.json()["detail"], lost.text
    after = await state(env, batch_id, wd1.id, wd2.id)
    assert after["withdrawals"] == sorted([(wd1.id, "confirmed", p),
                                           (wd2.id, "cancelled", None)])
    assert [a["rest"]["action"] for _, a in after["audit"]] == ["return"]
    assert after["balances"]["held"] == 0
    assert await env.runtime.payouts.create_batch() == 0  # nothing to pay
    await env.check()


async def test_the_admin_console_resolves_a_stuck_batch_from_its_review_item(env: Env):
    """The batch a ``payout_stuck`` item names is resolved on the item's page as through
    the API: refused with nothing changed until the node proves it safe, then re-queued,
    the item resolved with the note."""
    from tests.web.pages.admin_support import sign_in_admin
    from tests.web.pages.conftest import PASSWORD, csrf_of

    wd, _, _, batch_id = await conflict_stuck(env)
    async with env.sessions() as s, s.begin():
        await acc.create_user(s, email="root@example.com", password=PASSWORD, is_admin=True)
        item_id = (await s.execute(select(ReviewItem.id).where(
            ReviewItem.subject == batch_id, ReviewItem.kind == "payout_stuck"))).scalar_one()
    before = await state(env, batch_id, wd.id)
    form = {"action": "requeue", "note": "the coin went elsewhere"}
    async with api_client(env) as c:
        await sign_in_admin(c, env.sessions)
        page = await c.get(f"/admin/review/{item_id}")
        assert f'action="/admin/review/{item_id}/resolve-batch"' in page.text
        form["csrf_token"] = csrf_of(page.text)
        r = await c.post(f"/admin/review/{item_id}/resolve-batch", data=form)
        assert r.status_code == 409 and "confirmed" in r.text, r.text
        assert 'value="requeue" checked' in r.text  # the choice kept on the refusal
        assert await state(env, batch_id, wd.id) == before

        env.chain.mine(1)  # the unknown spender confirms: no version of the batch can now
        r = await c.post(f"/admin/review/{item_id}/resolve-batch", data=form)
        assert r.status_code == 303, r.text
        assert r.headers["location"] == f"/admin/review?done={item_id}"
    after = await state(env, batch_id, wd.id)
    assert after["status"] == "abandoned" and after["withdrawals"] == [(wd.id, "pending", None)]
    assert after["open_items"] == []
    assert [a["action"] for _, a in after["audit"]] == ["requeue"]
    await env.check()
