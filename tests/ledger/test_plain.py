"""The short path for a lone plain transfer (``ledger/_plain.py``): its statement count, the
same answers as the pure core at the edges, and a refusal recorded while it waited for the
row locks still wins (the snapshot race)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, text

from satvault.db import max_amount, session_factory, utcnow
from satvault.ledger.check import check_ledger
from satvault.ledger.core import (
    AccountKind,
    FailedTransfer,
    Result,
    TransferSpec,
    plan_transfers,
)
from satvault.ledger.store import (
    create_account,
    create_transfers,
    get_accounts,
    lookup_transfer,
    submit,
)
from tests.factories import account, books
from tests.waiting import lock_waiter


async def test_a_plain_transfer_is_one_statement_on_postgresql_two_on_sqlite(engine, sessions):
    b = await books(sessions, wallets=2, fund=1_000)
    alice, bob = b.wallets
    sent: list[str] = []

    def note(_conn, _cursor, statement, *_args):
        word = statement.split(None, 1)[0].upper()
        if word != "BEGIN":  # SQLite's BEGIN IMMEDIATE starts the transaction; not the ledger's
            sent.append(word)

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        async with sessions() as s, s.begin():
            sent.clear()
            (o,) = await create_transfers(s, [TransferSpec("p1", alice.id, bob.id, 10, "BTC")])
            ledger_statements = list(sent)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)
    assert o.result is Result.CREATED and o.transfer is not None and o.transfer.seq
    assert o.transfer.debit_after.debits_posted == 10
    assert o.transfer.credit_after.credits_posted == 1_010
    expected = ["WITH"] if engine.dialect.name == "postgresql" else ["INSERT", "UPDATE"]
    assert ledger_statements == expected
    assert (await account(sessions, bob.id)).balances.credits_posted == 1_010


# ``composition``: the application's sessions (their commit writes balance events, so a
# transfer goes through a session); ``plain``: sessions whose commit carries nothing else, where
# a lone plain transfer on PostgreSQL is one round trip in a transaction of its own
# (``_plain.post_alone``). Both must answer alike.
FACTORIES = ["composition", "plain"]


@pytest.mark.parametrize("factory", FACTORIES)
async def test_plain_transfers_answer_as_the_core_does_at_the_edges(sessions, engine, factory):
    """Limits on either side, balances at the top of the range, asset and account mistakes:
    whatever the short path lets through or hands on, the outcome is the core's."""
    if factory == "plain":
        sessions = session_factory(engine)
    top = max_amount(engine.dialect.name)
    async with sessions() as s, s.begin():
        world = await create_account(s, name="edge:world", asset="BTC", kind=AccountKind.EXTERNAL,
                                     credits_must_not_exceed_debits=True)
        sink = await create_account(s, name="edge:sink", asset="BTC", kind=AccountKind.EQUITY)
        wal = await create_account(s, name="edge:wallet", asset="BTC",
                                   kind=AccountKind.CUSTOMER_WALLET,
                                   debits_must_not_exceed_credits=True)
        eur = await create_account(s, name="edge:eur", asset="EUR", kind=AccountKind.EQUITY)
    await submit(sessions, [TransferSpec("seed-1", sink.id, world.id, 50, "BTC"),
                            TransferSpec("seed-2", world.id, wal.id, 30, "BTC")])
    cases = [
        TransferSpec("w-ok", wal.id, sink.id, 30, "BTC"),  # the wallet to exactly zero
        TransferSpec("w-over", wal.id, sink.id, 1, "BTC"),  # one more: exceeds_credits
        TransferSpec("x-over", sink.id, world.id, 51, "BTC"),  # world credited past debits
        TransferSpec("x-ok", sink.id, world.id, 50, "BTC"),
        TransferSpec("big", world.id, sink.id, top - 49, "BTC"),  # sink's debits at the top
        TransferSpec("big-2", world.id, sink.id, top, "BTC"),  # world's debits overflow
        TransferSpec("asset", sink.id, eur.id, 1, "BTC"),
        TransferSpec("asset-2", sink.id, wal.id, 1, "EUR"),
        TransferSpec("nobody", sink.id, 987_654, 1, "BTC"),
        TransferSpec("w-ok", wal.id, sink.id, 30, "BTC"),  # same again: exists
        TransferSpec("w-over", wal.id, sink.id, 1, "BTC"),  # remembered: id_already_failed
    ]
    ids = {world.id, sink.id, wal.id, eur.id}
    for spec in cases:
        async with sessions() as s:
            before = await get_accounts(s, ids)
            stored = await lookup_transfer(s, spec.id)
            existing = {spec.id: stored} if stored else {}
            failed_rows = (await s.execute(text(
                "SELECT id, result FROM ledger_failed_transfers"))).all()
        failed = {r.id: FailedTransfer(r.id, Result(r.result)) for r in failed_rows}
        want = plan_transfers([spec], accounts=before, existing=existing, failed=failed,
                              now=utcnow(), max_amount=top).outcomes[0]
        (got,) = await submit(sessions, [spec])
        assert got.result is want.result, spec
        if want.transfer is not None and want.result is Result.CREATED:
            assert got.transfer is not None
            assert got.transfer.debit_after == want.transfer.debit_after, spec
            assert got.transfer.credit_after == want.transfer.credit_after, spec
    async with sessions() as s:
        report = await check_ledger(s)
    assert report.ok, report.as_dict()


@pytest.mark.parametrize("factory", FACTORIES)
async def test_a_refusal_committed_while_the_short_path_waits_still_wins(sessions, engine,
                                                                         factory):
    """T1 refuses id X for lack of funds and remembers it, holding the accounts' locks. T2
    sends X again, smaller (it would fit), and waits for those locks with a snapshot from
    before T1's commit. Once T1 commits, T2 must answer ``id_already_failed``, as the general
    path would: the remembered refusal is not missed because of the older snapshot."""
    b = await books(sessions, wallets=2, fund=100)
    alice, bob = b.wallets
    if factory == "plain":
        sessions = session_factory(engine)
    async with sessions() as s1:
        await s1.begin()
        (first,) = await create_transfers(s1, [TransferSpec("X", alice.id, bob.id, 500, "BTC")])
        assert first.result is Result.EXCEEDS_CREDITS
        second = asyncio.create_task(
            submit(sessions, [TransferSpec("X", alice.id, bob.id, 50, "BTC")]))
        if engine.dialect.name == "postgresql":  # until T2 waits for T1's row locks
            await lock_waiter(engine, second)
        else:
            await asyncio.sleep(0.2)
        assert not second.done()
        await s1.commit()
    (again,) = await second
    assert again.result is Result.ID_ALREADY_FAILED, again
    assert (await account(sessions, alice.id)).balances.debits_posted == 0
    assert (await account(sessions, bob.id)).balances.credits_posted == 100
