"""A lone plain transfer from sessions whose commit carries nothing else: on PostgreSQL one
round trip on the driver connection, committed by the server before it answers
(``ledger/_plain.post_alone``). Its round trips, many racers on one wallet and on one id, and a
connection lost mid-statement (the outcome unknown, the retry landing once)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from sqlalchemy import event, func, select, text

from satvault.composition import open_sessions
from satvault.db import create_engine, session_factory
from satvault.ledger.check import check_ledger
from satvault.ledger.core import Result, TransferSpec
from satvault.ledger.models import LedgerTransfer
from satvault.ledger.store import submit
from tests.factories import account, books
from tests.waiting import lock_waiter


async def test_a_lone_transfer_is_one_round_trip_on_postgresql(db_url, sessions):
    b = await books(sessions, wallets=2, fund=1_000)
    alice, bob = b.wallets
    engine = create_engine(db_url, pool_size=1)
    plain = session_factory(engine)
    through_sqlalchemy: list[str] = []
    on_the_driver: list[str] = []

    def note(_conn, _cursor, statement, *_args):
        through_sqlalchemy.append(statement.split(None, 1)[0].upper())

    try:
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:  # the pool's one connection, logged
                driver = (await conn.get_raw_connection()).driver_connection
                driver.add_query_logger(lambda q: on_the_driver.append(
                    q.query.split(None, 1)[0].upper()))
        event.listen(engine.sync_engine, "before_cursor_execute", note)
        (o,) = await submit(plain, [TransferSpec("one-trip", alice.id, bob.id, 10, "BTC")])
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)
        await engine.dispose()
    assert o.result is Result.CREATED and o.transfer is not None and o.transfer.seq
    assert o.transfer.debit_after.debits_posted == 10
    assert o.transfer.credit_after.credits_posted == 1_010
    if engine.dialect.name == "postgresql":
        assert (through_sqlalchemy, on_the_driver) == ([], ["WITH"])  # no BEGIN, no COMMIT
    else:  # SQLite: the session's two statements (BEGIN IMMEDIATE is the engine's)
        assert [w for w in through_sqlalchemy if w != "BEGIN"] == ["INSERT", "UPDATE"]
    # durable and visible to everyone once submit returned
    assert (await account(sessions, bob.id)).balances.credits_posted == 1_010


async def test_racers_on_one_wallet_never_overdraw_and_one_id_lands_once(engine, sessions):
    balance, amount = 1_000, 70
    b = await books(sessions, wallets=2, fund=balance)
    alice, bob = b.wallets
    plain = session_factory(engine)
    drains = await asyncio.gather(*(
        submit(plain, [TransferSpec(f"drain-{i}", alice.id, bob.id, amount, "BTC")])
        for i in range(40)))
    results = [o.result for (o,) in drains]
    assert results.count(Result.CREATED) == balance // amount
    assert set(results) == {Result.CREATED, Result.EXCEEDS_CREDITS}
    # twenty racers with one id, back to alice: one transfer, every answer says so
    same = await asyncio.gather(*(
        submit(plain, [TransferSpec("back", bob.id, alice.id, 5, "BTC")]) for _ in range(20)))
    assert {o.result for (o,) in same} <= {Result.CREATED, Result.EXISTS}
    assert [o.result for (o,) in same].count(Result.CREATED) == 1
    assert len({o.transfer.seq for (o,) in same if o.transfer is not None}) == 1
    a = await account(sessions, alice.id)
    assert a.balances.credits_posted - a.balances.debits_posted == balance % amount + 5
    async with sessions() as s:
        report = await check_ledger(s)
        count = (await s.execute(select(func.count()).select_from(LedgerTransfer))).scalar_one()
    assert report.ok, report.as_dict()
    assert count == 2 + balance // amount + 1  # the two fundings, the drains, the one back


async def test_a_connection_lost_mid_transfer_leaves_nothing_and_the_retry_lands_once(
        pg_url: str):
    """PostgreSQL (the driver path is its own). The transfer's statement waits for a row lock;
    its backend is terminated. The caller gets an error (the outcome is unknown to it), nothing
    was written, and the same transfer sent again lands once."""
    engine = create_engine(pg_url, pool_size=3)
    sessions = open_sessions(engine)
    plain = session_factory(engine)
    try:
        b = await books(sessions, wallets=2, fund=1_000)
        alice, bob = b.wallets
        spec = TransferSpec(f"lost-{secrets.token_hex(4)}", alice.id, bob.id, 100, "BTC")
        async with sessions() as holder, holder.begin():
            await holder.execute(text(
                "SELECT id FROM ledger_accounts WHERE id = :id FOR UPDATE"), {"id": alice.id})
            sent = asyncio.create_task(submit(plain, [spec]))
            pid = await lock_waiter(engine, sent, query_like="%WITH locked%")
            async with engine.connect() as probe:
                await probe.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(Exception):  # noqa: B017 - any error: the outcome is unknown
                await sent
        async with sessions() as s:
            landed = (await s.execute(select(func.count()).select_from(LedgerTransfer)
                                      .where(LedgerTransfer.id == spec.id))).scalar_one()
        assert landed == 0
        (again,) = await submit(plain, [spec])
        (twice,) = await submit(plain, [spec])
        assert again.result is Result.CREATED and twice.result is Result.EXISTS
        assert (await account(sessions, bob.id)).balances.credits_posted == 1_100
        async with sessions() as s:
            report = await check_ledger(s)
        assert report.ok, report.as_dict()
    finally:
        await engine.dispose()
