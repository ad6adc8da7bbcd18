"""The ledger check finds what is wrong and names the rows."""

from __future__ import annotations

from sqlalchemy import text

from satvault.ledger.check import check_ledger
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.store import submit
from tests.factories import books


async def _report(sessions):
    async with sessions() as s:
        return await check_ledger(s)


async def test_clean_books_pass(sessions):
    b = await books(sessions, wallets=2, fund=500)
    await submit(sessions, [TransferSpec("h", b.wallets[0].id, b.platform.clearing.id, 100,
                                         "BTC", kind=TransferKind.PENDING)])
    report = await _report(sessions)
    assert report.ok and report.stats["live_holds"] == 1


async def test_tampered_balance_is_named(sessions):
    b = await books(sessions, wallets=2, fund=500)
    victim = b.wallets[1].id
    async with sessions() as s, s.begin():
        await s.execute(text("UPDATE ledger_accounts SET credits_posted = credits_posted + 7 "
                             "WHERE id = :id"), {"id": victim})
    report = await _report(sessions)
    assert not report.ok
    checks = {p.check for p in report.problems}
    assert {"double_entry", "stored_balance"} <= checks
    assert any(f"ledger_accounts.id={victim}" in p.rows for p in report.problems)


async def test_hold_marked_resolved_without_transfer_is_named(sessions):
    b = await books(sessions, wallets=1, fund=500)
    await submit(sessions, [TransferSpec("h", b.wallets[0].id, b.platform.clearing.id, 100,
                                         "BTC", kind=TransferKind.PENDING)])
    async with sessions() as s, s.begin():
        await s.execute(text("UPDATE ledger_transfers SET state = 'posted' WHERE id = 'h'"))
    report = await _report(sessions)
    assert any(p.check == "hold" and "ledger_transfers.id=h" in p.rows for p in report.problems)
