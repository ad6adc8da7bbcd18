"""Several instances (issue 13 §4): the lease that elects the process running the singleton
workers, and the fence on their writes.

The lease is a PostgreSQL mechanism (on SQLite one process owns the database and the lease is
trivially held): the tests marked ``postgres`` run where ``SATVAULT_TEST_POSTGRES_URL`` is set
(CI sets it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text

from satvault.accounts import service as acc
from satvault.accounts.models import User
from satvault.composition import open_sessions
from satvault.db import create_engine
from satvault.leases import Lease, LeaseLost
from satvault.workers import LeaseWorker, WakeListener, Worker, singleton
from tests.conftest import PG_URL
from tests.waiting import eventually

postgres = pytest.mark.skipif(not PG_URL, reason="PostgreSQL only: set SATVAULT_TEST_POSTGRES_URL")
on_postgres = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


async def users(sessions) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(User))).scalar_one())


async def row(engine) -> tuple[str, int]:
    async with engine.connect() as c:
        r = (await c.execute(text("SELECT holder, epoch FROM worker_leases"))).one()
    return r.holder, r.epoch


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_on_sqlite_the_lease_is_trivially_held(engine, sessions):
    lease = Lease(engine, holder="a", ttl=1)
    assert lease.held and await lease.refresh() and lease.epoch == 1
    assert lease.fenced(sessions) is sessions  # nothing to fence: one process
    await lease.release()
    assert lease.held


@postgres
@on_postgres
async def test_acquire_renew_expire_take_over_release(engine):
    # A lease of 2 s: its transactions may idle a third of it (667 ms) between statements, a
    # stall a loaded 2-core CI machine can reach at 1 s (one refresh cut off mid-way failed it).
    a = Lease(engine, holder="a", ttl=2)
    b = Lease(engine, holder="b", ttl=2)
    assert not a.held
    assert await a.refresh() and a.epoch == 1 and a.held
    assert not await b.refresh() and not b.held  # taken and not expired
    await asyncio.sleep(1.0)
    assert await a.refresh() and a.epoch == 1  # renewed: same epoch, later expiry
    await asyncio.sleep(1.2)
    assert not await b.refresh()  # 2.2 s after the first take, but renewed at 1 s
    await asyncio.sleep(1.2)
    assert await b.refresh() and b.epoch == 2  # a stopped renewing: b takes over, epoch + 1
    assert await row(engine) == ("b", 2)
    assert not await a.refresh() and not a.held and a.epoch is None
    await b.release()  # a clean shutdown: the next one takes over at once
    assert not b.held
    assert await a.refresh() and a.epoch == 3
    assert await row(engine) == ("a", 3)


@postgres
@on_postgres
async def test_local_belief_expires_without_renewal(engine):
    a = Lease(engine, holder="a", ttl=1)
    assert await a.refresh()
    await asyncio.sleep(1.05)
    assert not a.held  # no renewal for a lease time: standby, whatever the row says


@postgres
@on_postgres
async def test_fence_refuses_a_deposed_leaders_transactions(engine, sessions):
    a = Lease(engine, holder="a", ttl=1)
    b = Lease(engine, holder="b", ttl=1)
    assert await a.refresh()
    fenced = a.fenced(sessions)
    async with fenced() as s, s.begin():  # under a valid lease: written
        await acc.create_user(s, email="valid@example.com")
        assert not await b.refresh()  # the lease is a's: b waits, a's transaction goes on
        assert await a.refresh()  # a renews while its own transaction holds the row
    assert await users(sessions) == 1
    # a transaction still going on after its lease expired blocks the takeover: the process
    # taking over ends it, and none of it is kept
    with pytest.raises(Exception):  # noqa: B017 - its session was terminated
        async with fenced() as s, s.begin():
            await acc.create_user(s, email="late@example.com")
            for _ in range(8):  # busy (never idle), past the expiry
                await asyncio.sleep(0.3)
                await s.execute(text("SELECT 1"))
                if _ == 3:
                    assert not await b.refresh()  # the wait for the row times out: cut off
    assert await users(sessions) == 1
    assert await b.refresh() and b.epoch == 2
    # a comes back: its next transaction is refused before it writes anything
    with pytest.raises(LeaseLost):
        async with fenced() as s, s.begin():
            await acc.create_user(s, email="after@example.com")
    assert not a.held
    assert await users(sessions) == 1
    async with b.fenced(sessions)() as s, s.begin():  # the new leader's fenced sessions write
        await acc.create_user(s, email="b@example.com")
    assert await users(sessions) == 2


@postgres
@on_postgres
async def test_a_leader_stopped_inside_a_transaction_is_cut_off(engine, sessions):
    """SIGSTOP in the middle of a transaction: the row stays share-locked, so PostgreSQL ends
    the idle transaction after a lease time and the takeover goes through; the stopped
    leader's commit fails and nothing it wrote is kept."""
    a = Lease(engine, holder="a", ttl=1)
    b = Lease(engine, holder="b", ttl=1)
    assert await a.refresh()
    s = a.fenced(sessions)()
    await s.begin()
    await acc.create_user(s, email="stopped@example.com")
    await s.flush()
    started = time.monotonic()
    while not await b.refresh():
        assert time.monotonic() - started < 5, "no takeover"
        await asyncio.sleep(0.1)
    assert b.epoch == 2 and time.monotonic() - started < 3
    with pytest.raises(Exception):  # noqa: B017 - the connection was terminated by the server
        await s.commit()
    await s.close()
    assert await users(sessions) == 0


@postgres
@on_postgres
async def test_a_transaction_of_an_expired_epoch_that_is_not_idle_is_ended(engine, sessions):
    """Stopped halfway through a statement, a leader's session is not idle and the idle
    timeout does not end it: the process taking over ends it (here a statement still running
    long after the lease expired), and nothing of it is kept."""
    a = Lease(engine, holder="a", ttl=1)
    b = Lease(engine, holder="b", ttl=1)
    assert await a.refresh()

    async def stuck() -> None:
        async with a.fenced(sessions)() as s, s.begin():
            await acc.create_user(s, email="stuck@example.com")
            await s.execute(text("SELECT pg_sleep(30)"))

    task = asyncio.create_task(stuck())
    await asyncio.sleep(0.3)
    started = time.monotonic()
    while not await b.refresh():
        assert time.monotonic() - started < 6, "no takeover"
        await asyncio.sleep(0.2)
    assert b.epoch == 2
    with pytest.raises(Exception):  # noqa: B017 - its session was terminated
        await asyncio.wait_for(task, timeout=5)
    assert await users(sessions) == 0


@postgres
@on_postgres
async def test_a_leader_stopped_halfway_through_its_renewal_is_cut_off(engine):
    """Stopped after its renewal's UPDATE and before the COMMIT: the row is locked, so the
    renewal's own transaction is bounded too, and the takeover goes through."""
    from satvault.leases import _RENEW

    a = Lease(engine, holder="a", ttl=1)
    b = Lease(engine, holder="b", ttl=1)
    assert await a.refresh()
    conn = await engine.connect()
    await conn.begin()
    await a._bounded(conn)
    await conn.execute(_RENEW, {"name": a.name, "holder": "a", "epoch": 1, "ttl": 1.0})
    started = time.monotonic()
    while not await b.refresh():
        assert time.monotonic() - started < 5, "no takeover"
        await asyncio.sleep(0.1)
    assert b.epoch == 2 and time.monotonic() - started < 3
    with contextlib.suppress(Exception):
        await conn.close()


@postgres
@on_postgres
async def test_singleton_workers_run_only_in_the_holder(engine, db_url):
    other = create_engine(db_url, pool_size=2)  # a second process's pool
    try:
        a, b = Lease(engine, holder="a", ttl=1), Lease(other, holder="b", ttl=1)
        ran: list[str] = []
        sessions_a, sessions_b = open_sessions(engine), open_sessions(other)

        def job(name: str, sessions) -> Worker:
            async def tick() -> int:
                async with sessions() as s, s.begin():
                    await acc.create_user(s, email=f"{name}{len(ran)}@example.com")
                ran.append(name)
                return 1
            return Worker(f"job-{name}", 0.05, tick)

        wa = singleton(job("a", a.fenced(sessions_a)), a)
        wb = singleton(job("b", b.fenced(sessions_b)), b)
        keepers = [LeaseWorker(a, [wa]), LeaseWorker(b, [wb])]
        for w in [wa, wb, *keepers]:
            w.start()
        # A loaded machine (CI's) may take longer than half a second to run the first tick.
        await eventually(lambda: ran, timeout=30, message="no worker ran")
        await asyncio.sleep(0.5)  # the other had time to run, were it not kept out
        assert len(set(ran)) == 1, ran  # one of them holds the lease: only it ran
        first = ran[0]
        holder, other_lease = (0, b) if first == "a" else (1, a)
        assert (a if first == "a" else b).held and not other_lease.held
        await keepers[holder].stop()  # the holder's keeper gives the lease back: takeover
        second = "b" if first == "a" else "a"
        await eventually(lambda: other_lease.held and ran[-1] == second, timeout=30,
                         message="the other process did not take over")
        assert not (a if first == "a" else b).held
        stop_rest = [wa, wb, keepers[1 - holder]]
        for w in stop_rest:
            await w.stop()
        # Every tick that ran wrote its row (the last one may be cancelled by stop() after its
        # commit, before it was counted here).
        assert await users(sessions_a) in (len(ran), len(ran) + 1)
    finally:
        await other.dispose()


@postgres
@on_postgres
async def test_work_queued_by_any_process_wakes_the_workers(engine, db_url, sessions):
    """``LISTEN satvault_work``: a committed withdrawal that queues work (inserted as, or moved
    to, ``pending``; from any connection, here another process's pool) wakes the workers
    registered for it; not before commit. One that queues none (an internal payment,
    inserted settled; one held for review) wakes nobody (migration 0038: they woke both
    workers on every internal payment)."""
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="wake@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
    payouts, webhooks = asyncio.Event(), asyncio.Event()
    listener = WakeListener(engine, {"withdrawals": [payouts],
                                     "webhook_deliveries": [webhooks]})
    task = asyncio.create_task(listener.run())
    other = create_engine(db_url, pool_size=1)
    insert = text(
        "INSERT INTO withdrawals (id, wallet_id, method, destination, amount_msat, "
        "fee_reserve_msat, fee_msat, status, hold_id, created_at, updated_at) VALUES "
        "(:id, :wallet, :method, 'bc1qdest', 1000, 0, 0, :status, :id, now(), now())")

    async def committed(statement: Any, **values: Any) -> None:
        async with other.begin() as conn:
            await conn.execute(statement, values)
            await asyncio.sleep(0.2)
            assert not payouts.is_set()  # NOTIFY is delivered at commit, if at all

    try:
        while listener.runs < 1:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        payouts.clear()
        webhooks.clear()
        await committed(insert, id="wd_settled", wallet=wallet.id, method="internal",
                        status="confirmed")
        await committed(insert, id="wd_review", wallet=wallet.id, method="onchain",
                        status="review")
        await asyncio.sleep(0.3)
        assert not payouts.is_set()  # no work queued: nobody woken
        await committed(insert, id="wd_pending", wallet=wallet.id, method="onchain",
                        status="pending")
        await asyncio.wait_for(payouts.wait(), timeout=2)
        payouts.clear()
        await committed(text("UPDATE withdrawals SET status = 'pending' WHERE id = :id"),
                        id="wd_review")  # the review released: now it is work
        await asyncio.wait_for(payouts.wait(), timeout=2)
        assert not webhooks.is_set()
        assert listener.last_error is None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await other.dispose()
