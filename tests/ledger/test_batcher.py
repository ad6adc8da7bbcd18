"""Group commit gives every caller what a solo submit would, under concurrency."""

from __future__ import annotations

import asyncio

from satvault.ledger.batcher import LedgerBatcher
from satvault.ledger.check import check_ledger
from satvault.ledger.core import Result, TransferKind, TransferSpec
from tests.factories import account, books


async def test_concurrent_callers_share_rounds_with_solo_semantics(sessions):
    b = await books(sessions, wallets=4, fund=10_000)
    w = [x.id for x in b.wallets]
    batcher = LedgerBatcher(sessions)
    calls = []
    for i in range(60):
        d, c = w[i % 4], w[(i + 1) % 4]
        calls.append([TransferSpec(f"g{i}", d, c, 100 + i, "BTC")])
    # a linked pair that must fail together, an overdraft, and a duplicate id
    calls.append([TransferSpec("pair-a", w[0], w[1], 5, "BTC", linked=True),
                  TransferSpec("pair-b", w[0], w[1], 10**9, "BTC")])
    calls.append([TransferSpec("too-much", w[2], w[3], 10**9, "BTC")])
    calls.append([TransferSpec("g0", w[0], w[1], 100, "BTC")])
    calls.append([TransferSpec("hold", w[3], b.platform.clearing.id, 50, "BTC",
                               kind=TransferKind.PENDING)])
    results = await asyncio.gather(*(batcher.submit(c) for c in calls))
    assert batcher.rounds < len(calls)  # rounds were actually shared
    assert all(r[0].result in (Result.CREATED, Result.EXISTS) for r in results[:60])
    assert [o.result for o in results[60]] == [Result.LINKED_EVENT_FAILED,
                                               Result.EXCEEDS_CREDITS]
    assert [o.index for o in results[60]] == [0, 1]
    assert results[61][0].result is Result.EXCEEDS_CREDITS
    assert results[62][0].result is Result.EXISTS
    assert results[63][0].result is Result.CREATED
    total = 0
    for x in w:
        a = await account(sessions, x)
        total += a.balances.credits_posted - a.balances.debits_posted
    assert total == 40_000
    async with sessions() as s:
        assert (await check_ledger(s)).ok


async def test_ledger_writer_gives_solo_outcomes_either_way(sessions):
    from satvault.ledger.batcher import ledger_writer

    b = await books(sessions, wallets=2, fund=1_000)
    alice, bob = b.wallets
    seen = {}
    for flag in ("0", "1"):
        writer = ledger_writer(sessions, group_commit=flag == "1")
        assert isinstance(writer, LedgerBatcher) is (flag == "1")
        calls = [[TransferSpec(f"w{flag}-{i}", alice.id, bob.id, 100, "BTC")] for i in range(6)]
        results = await asyncio.gather(*(writer.submit(c) for c in calls))
        again = await writer.submit(calls[0])
        seen[flag] = sorted(r[0].result.value for r in results), again[0].result
        if flag == "1":
            assert writer.rounds < len(calls) + 1  # concurrent calls shared a commit
    # Alice holds 1,000: the solo run spends 600, so the grouped run has room for four of its
    # six transfers and refuses the other two, as six solo submits would.
    assert seen["0"] == (["created"] * 6, Result.EXISTS)
    assert seen["1"][0] == ["created"] * 4 + ["exceeds_credits"] * 2
    assert seen["1"][1] is Result.EXISTS
    assert (await account(sessions, alice.id)).balances.debits_posted == 1_000
