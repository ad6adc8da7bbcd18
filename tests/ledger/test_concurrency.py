"""Many writers at once, each on its own connection: no overdraft, no deadlock surfacing,
one landing per id, totals conserved, and the ledger check passes afterwards."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.ledger.check import check_ledger
from satvault.ledger.core import Result, TransferKind, TransferSpec
from satvault.ledger.errors import InsufficientFunds
from satvault.ledger.store import submit, submit_one
from tests.factories import account, books


async def _check(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s:
        report = await check_ledger(s)
    assert report.ok, report.as_dict()


async def test_200_concurrent_holds_never_overdraw(sessions):
    balance, amount = 1_000_003, 7_000
    b = await books(sessions, wallets=1, fund=balance)
    (alice,) = b.wallets
    clearing = b.platform.clearing.id

    async def hold(i: int) -> bool:
        try:
            await submit_one(sessions, TransferSpec(
                f"hold-{i}", alice.id, clearing, amount, "BTC", kind=TransferKind.PENDING))
            return True
        except InsufficientFunds:
            return False

    results = await asyncio.gather(*(hold(i) for i in range(200)))
    assert sum(results) == balance // amount
    a = await account(sessions, alice.id)
    assert a.balances.debits_pending == (balance // amount) * amount
    assert a.balances.credits_posted - a.balances.debits_pending >= 0
    await _check(sessions)


async def test_transfers_both_ways_no_deadlock_totals_conserved(sessions):
    b = await books(sessions, wallets=4, fund=1_000_000)
    ids = [w.id for w in b.wallets]
    rng = random.Random(7)
    pairs = [(rng.choice(ids), rng.choice(ids)) for _ in range(400)]
    pairs = [(d, c) for d, c in pairs if d != c]

    async def move(i: int, d: int, c: int) -> None:
        # Two transfers per batch, in opposite directions, so lock order matters.
        outcomes = await submit(sessions, [
            TransferSpec(f"fw-{i}", d, c, 1 + i % 50, "BTC"),
            TransferSpec(f"bw-{i}", c, d, 1 + i % 30, "BTC"),
        ])
        assert all(o.ok for o in outcomes), outcomes

    await asyncio.gather(*(move(i, d, c) for i, (d, c) in enumerate(pairs)))
    total = 0
    for w in b.wallets:
        a = await account(sessions, w.id)
        total += a.balances.credits_posted - a.balances.debits_posted
    assert total == 4 * 1_000_000
    await _check(sessions)


async def test_same_id_fifty_times_concurrently_lands_once(sessions):
    b = await books(sessions, wallets=2, fund=10_000)
    alice, bob = b.wallets
    spec = TransferSpec("once", alice.id, bob.id, 1_234, "BTC", code="payment")
    outcomes = await asyncio.gather(*(submit(sessions, [spec]) for _ in range(50)))
    results = [o[0].result for o in outcomes]
    assert results.count(Result.CREATED) == 1
    assert results.count(Result.EXISTS) == 49
    assert len({o[0].transfer.seq for o in outcomes}) == 1
    assert (await account(sessions, bob.id)).balances.credits_posted == 10_000 + 1_234
    await _check(sessions)


async def test_same_id_on_different_accounts_concurrently(sessions):
    """Locks can't order these (different accounts): the unique index decides, the loser is
    retried and then sees the winner's row as a conflict, never a second landing."""
    b = await books(sessions, wallets=4, fund=10_000)
    w = b.wallets
    specs = [TransferSpec("contested", w[i].id, w[(i + 1) % 4].id, 10, "BTC") for i in range(4)]
    outcomes = await asyncio.gather(*(submit(sessions, [s]) for s in specs))
    results = [o[0].result for o in outcomes]
    assert results.count(Result.CREATED) == 1
    assert all(r is Result.CREATED or r.value.startswith("exists_with_different") for r in results)
    await _check(sessions)


async def test_concurrent_post_and_void_of_one_hold_resolve_once(sessions):
    b = await books(sessions, wallets=1, fund=10_000)
    (alice,) = b.wallets
    await submit_one(sessions, TransferSpec("h", alice.id, b.platform.clearing.id, 5_000, "BTC",
                                            kind=TransferKind.PENDING))
    specs = [TransferSpec(f"r{i}", kind=TransferKind.POST if i % 2 else TransferKind.VOID,
                          pending_id="h") for i in range(20)]
    outcomes = await asyncio.gather(*(submit(sessions, [s]) for s in specs))
    assert sum(o[0].result is Result.CREATED for o in outcomes) == 1
    await _check(sessions)
