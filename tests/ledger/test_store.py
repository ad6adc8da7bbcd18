"""The store on real databases: typed errors, nothing written on bad input, idempotency,
two-phase transfers, expiry, statements, and the database's own guards."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from satvault.db import utcnow
from satvault.ledger.check import check_ledger
from satvault.ledger.core import Balances, HoldState, Result, TransferKind, TransferSpec
from satvault.ledger.errors import (
    AmountOutOfRange,
    HoldNotPending,
    InsufficientFunds,
    InvalidTransfer,
    TransferConflict,
    UnknownAccount,
)
from satvault.ledger.history import InvalidCursor, statement
from satvault.ledger.models import LedgerTransfer
from satvault.ledger.store import (
    create_transfers,
    expire_due_holds,
    lookup_transfer,
    submit,
    submit_one,
    transfer,
)
from tests.factories import account, books, wallet


async def _snapshot(sessions):
    async with sessions() as s:
        n = (await s.execute(select(func.count()).select_from(LedgerTransfer))).scalar_one()
        rows = (await s.execute(text(
            "SELECT id, debits_posted, credits_posted, debits_pending, credits_pending "
            "FROM ledger_accounts ORDER BY id"))).all()
        failed = (await s.execute(text("SELECT count(*) FROM ledger_failed_transfers"))).scalar()
    return n, [tuple(int(x) for x in r) for r in rows], failed


async def _one(sessions, spec):
    return await submit_one(sessions, spec)


async def test_transfer_inside_a_unit_of_work_rolls_back_with_it(sessions):
    b = await books(sessions, wallets=2, fund=100)
    alice, bob = b.wallets
    with pytest.raises(InsufficientFunds):
        async with sessions() as s, s.begin():
            await transfer(s, TransferSpec("ok-part", alice.id, bob.id, 60, "BTC"))
            await transfer(s, TransferSpec("too-much", alice.id, bob.id, 60, "BTC"))
    assert (await account(sessions, bob.id)).balances.credits_posted == 100
    assert await submit_one(sessions, TransferSpec("too-much", alice.id, bob.id, 60, "BTC"))


async def _assert_books_ok(sessions):
    async with sessions() as s:
        report = await check_ledger(s)
    assert report.ok, report.as_dict()


async def test_bad_input_raises_typed_errors_and_writes_nothing(sessions, db_url):
    b = await books(sessions, wallets=2, fund=10_000)
    alice, bob = b.wallets
    async with sessions() as s, s.begin():
        eur = await wallet(s, asset="EUR")
    before = await _snapshot(sessions)
    huge = 2**63 if "sqlite" in db_url else 2**128
    bad = [
        (TransferSpec("z", alice.id, bob.id, 0, "BTC"), InvalidTransfer, "amount_must_be_positive"),
        (TransferSpec("n", alice.id, bob.id, -1, "BTC"), InvalidTransfer,
         "amount_must_be_positive"),
        (TransferSpec("h", alice.id, bob.id, huge, "BTC"), AmountOutOfRange,
         "amount_out_of_range"),
        (TransferSpec("u", alice.id, 999_999, 1, "BTC"), UnknownAccount,
         "credit_account_not_found"),
        (TransferSpec("m", alice.id, eur.id, 1, "BTC"), InvalidTransfer, "asset_mismatch"),
        (TransferSpec("m2", alice.id, bob.id, 1, "EUR"), InvalidTransfer, "asset_mismatch"),
        (TransferSpec("pv", kind=TransferKind.POST, pending_id="missing"), HoldNotPending,
         "pending_transfer_not_found"),
    ]
    for spec, exc_type, result in bad:
        with pytest.raises(exc_type) as info:
            await _one(sessions, spec)
        assert info.value.result.value == result
        assert result in str(info.value)
    assert await _snapshot(sessions) == before


async def test_post_voided_and_void_posted_are_refused(sessions):
    b = await books(sessions, wallets=1, fund=10_000)
    (alice,) = b.wallets
    clearing = b.platform.clearing.id
    await submit(sessions, [
        TransferSpec("h1", alice.id, clearing, 1000, "BTC", kind=TransferKind.PENDING),
        TransferSpec("h2", alice.id, clearing, 1000, "BTC", kind=TransferKind.PENDING),
    ])
    await _one(sessions, TransferSpec("v1", kind=TransferKind.VOID, pending_id="h1"))
    await _one(sessions, TransferSpec("p2", kind=TransferKind.POST, pending_id="h2"))
    before = await _snapshot(sessions)
    with pytest.raises(HoldNotPending, match="pending_transfer_already_voided"):
        await _one(sessions, TransferSpec("p1", kind=TransferKind.POST, pending_id="h1"))
    with pytest.raises(HoldNotPending, match="pending_transfer_already_posted"):
        await _one(sessions, TransferSpec("v2", kind=TransferKind.VOID, pending_id="h2"))
    assert await _snapshot(sessions) == before
    a = await account(sessions, alice.id)
    assert a.balances == Balances(debits_posted=1000, credits_posted=10_000)
    await _assert_books_ok(sessions)


async def test_idempotent_retry_returns_original_and_conflict_names_field(sessions):
    b = await books(sessions, wallets=2, fund=5_000)
    alice, bob = b.wallets
    spec = TransferSpec("pay-1", alice.id, bob.id, 700, "BTC", code="payment", ref="order 7")
    first = await _one(sessions, spec)
    again = await _one(sessions, spec)
    assert again == first
    async with sessions() as s, s.begin():
        (o,) = await create_transfers(s, [spec])
    assert o.result is Result.EXISTS
    with pytest.raises(TransferConflict) as info:
        await _one(sessions, TransferSpec("pay-1", alice.id, bob.id, 701, "BTC",
                                          code="payment", ref="order 7"))
    assert info.value.field == "amount"
    assert (await account(sessions, bob.id)).balances.credits_posted == 5_700


async def test_failed_for_funds_stays_failed(sessions):
    b = await books(sessions, wallets=2, fund=100)
    alice, bob = b.wallets
    spec = TransferSpec("too-much", alice.id, bob.id, 500, "BTC")
    with pytest.raises(InsufficientFunds, match="exceeds_credits"):
        await _one(sessions, spec)
    await submit(sessions, [TransferSpec("topup", b.platform.external.id, alice.id, 1000, "BTC")])
    with pytest.raises(InsufficientFunds, match="id_already_failed"):
        await _one(sessions, spec)
    assert (await account(sessions, bob.id)).balances.credits_posted == 100
    await _assert_books_ok(sessions)


async def test_linked_batch_all_or_nothing(sessions):
    b = await books(sessions, wallets=2, fund=1_000)
    alice, bob = b.wallets
    fees = b.platform.fees.id
    outcomes = await submit(sessions, [
        TransferSpec("pay", alice.id, bob.id, 900, "BTC", linked=True),
        TransferSpec("fee", alice.id, fees, 200, "BTC"),
    ])
    assert [o.result for o in outcomes] == [Result.LINKED_EVENT_FAILED, Result.EXCEEDS_CREDITS]
    assert (await account(sessions, alice.id)).balances.debits_posted == 0
    outcomes = await submit(sessions, [
        TransferSpec("pay2", alice.id, bob.id, 900, "BTC", linked=True),
        TransferSpec("fee2", alice.id, fees, 100, "BTC"),
    ])
    assert all(o.ok for o in outcomes)
    assert (await account(sessions, fees)).balances.credits_posted == 100
    await _assert_books_ok(sessions)


async def test_partial_post_and_expiry(sessions):
    b = await books(sessions, wallets=1, fund=10_000)
    (alice,) = b.wallets
    clearing = b.platform.clearing.id
    await submit(sessions, [
        TransferSpec("hold-a", alice.id, clearing, 4000, "BTC", kind=TransferKind.PENDING),
        TransferSpec("hold-b", alice.id, clearing, 3000, "BTC", kind=TransferKind.PENDING,
                     timeout_seconds=30),
    ])
    a = await account(sessions, alice.id)
    assert a.balances.debits_pending == 7000
    await _one(sessions, TransferSpec("post-a", kind=TransferKind.POST, pending_id="hold-a",
                                      amount=2500))
    async with sessions() as s, s.begin():
        assert await expire_due_holds(s) == 0
    async with sessions() as s, s.begin():
        assert await expire_due_holds(s, now=utcnow() + timedelta(seconds=31)) == 1
    a = await account(sessions, alice.id)
    assert a.balances == Balances(debits_posted=2500, credits_posted=10_000)
    async with sessions() as s:
        hold_b = await lookup_transfer(s, "hold-b")
    assert hold_b is not None and hold_b.state is HoldState.EXPIRED
    with pytest.raises(HoldNotPending):
        await _one(sessions, TransferSpec("post-b", kind=TransferKind.POST, pending_id="hold-b"))
    await _assert_books_ok(sessions)


async def test_statement_pages_with_running_balance(sessions):
    b = await books(sessions, wallets=2, fund=10_000)
    alice, bob = b.wallets
    for i in range(7):
        await _one(sessions, TransferSpec(f"s{i}", alice.id, bob.id, 100 * (i + 1), "BTC"))
    seen, cursor = [], None
    async with sessions() as s:
        while True:
            page = await statement(s, alice.id, limit=3, cursor=cursor)
            seen.extend(page.lines)
            cursor = page.next_cursor
            if cursor is None:
                break
        with pytest.raises(InvalidCursor):
            await statement(s, alice.id, cursor="not-a-cursor")
    assert len(seen) == 8  # the funding credit and seven payments, newest first
    assert [ln.seq for ln in seen] == sorted((ln.seq for ln in seen), reverse=True)
    running = [ln.posted_after for ln in reversed(seen)]
    expected, bal = [], 0
    for ln in reversed(seen):
        bal += ln.amount if ln.direction == "credit" else -ln.amount
        expected.append(bal)
    assert running == expected
    assert running[-1] == 10_000 - sum(100 * (i + 1) for i in range(7))


async def test_database_refuses_overdraft_and_double_resolution_by_itself(sessions):
    """Bypass Python: the CHECK and UNIQUE constraints still hold the line."""
    b = await books(sessions, wallets=1, fund=100)
    (alice,) = b.wallets
    async with sessions() as s:
        with pytest.raises(IntegrityError):
            async with s.begin():
                await s.execute(text("UPDATE ledger_accounts SET debits_posted = 101 "
                                     "WHERE id = :id"), {"id": alice.id})
    await submit(sessions, [TransferSpec("h", alice.id, b.platform.clearing.id, 50, "BTC",
                                         kind=TransferKind.PENDING)])
    await _one(sessions, TransferSpec("v", kind=TransferKind.VOID, pending_id="h"))
    async with sessions() as s:
        with pytest.raises(IntegrityError):
            async with s.begin():
                await s.execute(text(
                    "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, "
                    "amount, asset, kind, pending_id, timeout_seconds, linked, code, ref, "
                    "created_at, dr_debits_posted, dr_credits_posted, dr_debits_pending, "
                    "dr_credits_pending, cr_debits_posted, cr_credits_posted, "
                    "cr_debits_pending, cr_credits_pending) VALUES ('p', :d, :c, 50, 'BTC', "
                    "'post', 'h', 0, false, '', '', CURRENT_TIMESTAMP, 0,0,0,0,0,0,0,0)"),
                    {"d": alice.id, "c": b.platform.clearing.id})
    await _assert_books_ok(sessions)
