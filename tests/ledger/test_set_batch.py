"""A batch of plain transfers on PostgreSQL, planned by the database set-based (``_plain.
create_plain_batch``): two statements whatever its size when nothing is refused; the general
path's answer, transfer by transfer, in every case (refusals mid-batch, duplicates, stored and
refused ids, a missing account, an asset mismatch); racing batches on shared accounts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

import satvault.ledger.store as ledger_store
from satvault.ledger.check import check_ledger
from satvault.ledger.core import AccountKind, Outcome, Result, TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import create_account, submit
from tests.conftest import PG_URL
from tests.factories import account, books

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="PostgreSQL only: set SATVAULT_TEST_POSTGRES_URL"),
    pytest.mark.parametrize("db_url", ["postgres"], indirect=True),
]


@contextmanager
def statements(engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_args):
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


@contextmanager
def general_path_only() -> Iterator[None]:
    real = ledger_store.create_plain_batch

    async def never(*_args, **_kw):
        return None

    ledger_store.create_plain_batch = never  # type: ignore[assignment]
    try:
        yield
    finally:
        ledger_store.create_plain_batch = real  # type: ignore[assignment]


def comparable(outcomes: list[Outcome]) -> list[tuple]:
    """Everything an outcome says but the sequence number (two books, two sequences)."""
    return [(o.index, o.id, o.result, None if o.transfer is None else (
        o.transfer.debit_account_id, o.transfer.credit_account_id, o.transfer.amount,
        o.transfer.code, o.transfer.ref, o.transfer.debit_after, o.transfer.credit_after,
        o.transfer.linked)) for o in outcomes]


async def twin_books(sessions, n: int, fund: int):
    """Two identical sets of wallets (ids differ by a fixed offset), one per path."""
    one = await books(sessions, wallets=n, fund=fund)
    two = await books(sessions, wallets=n, fund=fund)
    return [w.id for w in one.wallets], [w.id for w in two.wallets]


def remap(specs: list[TransferSpec], ids: list[int], to: list[int], tag: str
          ) -> list[TransferSpec]:
    m = dict(zip(ids, to, strict=True))
    return [TransferSpec(f"{tag}{s.id}", m.get(s.debit_account_id, s.debit_account_id),
                         m.get(s.credit_account_id, s.credit_account_id), s.amount, s.asset,
                         linked=s.linked, code=s.code, ref=s.ref) for s in specs]


async def test_a_batch_with_nothing_refused_is_two_statements(engine, sessions):
    b = await books(sessions, wallets=20, fund=1_000)
    rng = random.Random(7)
    specs = []
    for i in range(300):
        dr, cr = rng.sample(b.wallets, 2)
        specs.append(TransferSpec(f"t{i}", dr.id, cr.id, rng.randint(1, 20), "BTC",
                                  code="move", ref=f"r{i}"))
    async with sessions() as s, s.begin():
        with statements(engine) as seen:
            outcomes = await ledger_store.create_transfers(s, specs)
    assert seen == ["SELECT", "WITH"]  # the lock, then the whole batch
    assert [o.result for o in outcomes] == [Result.CREATED] * 300
    seqs = [o.transfer.seq for o in outcomes if o.transfer is not None]
    assert seqs == sorted(seqs) and len(set(seqs)) == 300  # stored in the batch's order
    # the snapshots replay the batch; the last ones are the balances now
    last: dict[int, tuple] = {}
    for o in outcomes:
        t = o.transfer
        assert t is not None
        last[t.debit_account_id] = t.debit_after
        last[t.credit_account_id] = t.credit_after
    for aid, after in last.items():
        assert (await account(sessions, aid)).balances == after
    async with sessions() as s:
        report = await check_ledger(s)
    assert report.ok, report.as_dict()


def mixed_batch(ids: list[int], rng: random.Random, n: int) -> list[TransferSpec]:
    """Random moves among wallets funded with little, so some overdraw part-way through, and
    halfway a top-up of the first from the last (the bank, funded with plenty)."""
    movers, bank = ids[:-1], ids[-1]
    specs = []
    for i in range(n):
        dr, cr = rng.sample(movers, 2)
        specs.append(TransferSpec(f"m{i}", dr, cr, rng.randint(1, 400), "BTC", ref=str(i)))
    specs.insert(n // 2, TransferSpec("fund-late", bank, ids[0], 5_000, "BTC"))
    return specs


@pytest.mark.parametrize("case", ["nothing_refused", "overdraft_mid_batch", "stored_id",
                                  "refused_id", "missing_account", "asset_mismatch",
                                  "duplicate_in_batch", "limit_of_the_sender", "linked_pass",
                                  "linked_chain_fails", "chain_left_open"])
async def test_the_set_path_answers_as_the_general_path(engine, sessions, case):
    async with sessions() as s, s.begin():
        external = (await ensure_platform_accounts(s, "BTC")).external.id
        eth_one = await create_account(s, name="eth:1", asset="ETH",
                                       kind=AccountKind.CUSTOMER_WALLET,
                                       debits_must_not_exceed_credits=True)
        eth_two = await create_account(s, name="eth:2", asset="ETH",
                                       kind=AccountKind.CUSTOMER_WALLET,
                                       debits_must_not_exceed_credits=True)
    fund = 100_000 if case in ("nothing_refused", "linked_pass") else 500
    one, two = await twin_books(sessions, 8, fund)
    assert all(o.ok for o in await submit(sessions, [
        TransferSpec(f"bank{w}", external, w, 1_000_000, "BTC") for w in (one[-1], two[-1])]))
    rng = random.Random(case)
    base = mixed_batch(one, rng, 60)
    if case in ("linked_pass", "linked_chain_fails", "chain_left_open"):
        # payments with a fee: each a linked pair, the fee to the bank (as a fees account)
        base = []
        for i in range(30):
            dr, cr = rng.sample(one[:-1], 2)
            base += [TransferSpec(f"p{i}", dr, cr, rng.randint(1, 40), "BTC", linked=True),
                     TransferSpec(f"p{i}f", dr, one[-1], 1, "BTC", code="fee")]
        if case == "linked_chain_fails":  # the fee of the 11th overdraws: the pair fails whole
            base[21] = TransferSpec("p10f", base[20].debit_account_id, one[-1], 10**7, "BTC")
        elif case == "chain_left_open":
            base[-1] = TransferSpec("p29f", base[-1].debit_account_id, one[-1], 1, "BTC",
                                    linked=True)
    elif case == "nothing_refused":
        base = [s for s in base if s.id != "fund-late"]
    elif case == "stored_id":
        base[10] = TransferSpec("already", one[0], one[1], 1, "BTC")
    elif case == "refused_id":
        base[20] = TransferSpec("refused", one[2], one[3], 10**9, "BTC")
    elif case == "missing_account":
        base[30] = TransferSpec("ghost", one[0], 10**9, 1, "BTC")
    elif case == "asset_mismatch":
        base[40] = TransferSpec("eth", eth_one.id, one[1], 1, "BTC")
    elif case == "duplicate_in_batch":
        base.append(TransferSpec(base[3].id, base[3].debit_account_id,
                                 base[3].credit_account_id, base[3].amount, "BTC", ref="3"))
    elif case == "limit_of_the_sender":
        base = [TransferSpec("eth-a", eth_one.id, eth_two.id, 1, "ETH"),
                TransferSpec("eth-b", eth_two.id, eth_one.id, 1, "ETH")]
    results = []
    for tag, ids, general in (("A", one, False), ("B", two, True)):
        specs = remap(base, one, ids, tag)
        if case in ("stored_id", "refused_id"):  # the id exists / was refused before
            prior = next(s for s in specs if s.id.endswith(("already", "refused")))
            await submit(sessions, [prior])
        if general:
            with general_path_only():
                results.append(await submit(sessions, specs))
        else:
            results.append(await submit(sessions, specs))
    path_a, path_b = (comparable(r) for r in results)
    m = dict(zip(one, two, strict=True))
    normalised = [(i, oid[1:], res, t if t is None else (
        m.get(t[0], t[0]), m.get(t[1], t[1]), *t[2:])) for i, oid, res, t in path_a]
    assert normalised == [(i, oid[1:], res, t) for i, oid, res, t in path_b]
    if case in ("nothing_refused", "linked_pass"):
        assert {o.result for o in results[0]} == {Result.CREATED}
    elif case == "linked_chain_fails":
        assert [o.result for o in results[0][20:22]] == [Result.LINKED_EVENT_FAILED,
                                                         Result.EXCEEDS_CREDITS]
    elif case == "chain_left_open":
        assert results[0][-1].result is Result.LINKED_EVENT_CHAIN_OPEN
    elif case == "limit_of_the_sender":
        assert [o.result for o in results[0]] == [Result.EXCEEDS_CREDITS] * 2
    else:
        assert Result.CREATED in {o.result for o in results[0]}
        assert {o.result for o in results[0]} != {Result.CREATED}
    for a, b_ in zip(one, two, strict=True):
        assert (await account(sessions, a)).balances == (await account(sessions, b_)).balances
    async with sessions() as s:
        report = await check_ledger(s)
    assert report.ok, report.as_dict()


async def test_racing_batches_on_shared_accounts(sessions):
    """Eight batches at once over the same ten wallets: every wallet ends at what the created
    transfers say, no wallet is overdrawn, and an id sent by two batches lands once."""
    b = await books(sessions, wallets=10, fund=2_000)
    ids = [w.id for w in b.wallets]
    rng = random.Random(3)

    def batch(k: int) -> list[TransferSpec]:
        out = [TransferSpec(f"race{k}-{i}", *rng.sample(ids, 2), rng.randint(1, 300), "BTC")
               for i in range(100)]
        out.append(TransferSpec("shared", ids[0], ids[1], 1, "BTC"))  # in every batch
        return out

    batches = [batch(k) for k in range(8)]
    answers = await asyncio.gather(*(submit(sessions, x) for x in batches))
    created = [o.transfer for r in answers for o in r if o.result is Result.CREATED]
    shared = [o.result for r in answers for o in r if o.id == "shared"]
    assert shared.count(Result.CREATED) == 1 and set(shared) <= {Result.CREATED, Result.EXISTS}
    net = dict.fromkeys(ids, 2_000)
    for t in created:
        assert t is not None
        net[t.debit_account_id] -= t.amount
        net[t.credit_account_id] += t.amount
    for aid in ids:
        bal = (await account(sessions, aid)).balances
        assert bal.credits_posted - bal.debits_posted == net[aid] >= 0
    async with sessions() as s:
        report = await check_ledger(s)
    assert report.ok, report.as_dict()


async def test_linked_pairs_are_stored_as_sent_and_read_back_alike(engine, sessions):
    """A batch of payment + fee pairs takes the two statements; the stored rows carry the
    chain flags, and reading a transfer back gives what the outcome said."""
    b = await books(sessions, wallets=4, fund=10_000)
    w = [x.id for x in b.wallets]
    specs = []
    for i in range(10):
        specs += [TransferSpec(f"pay{i}", w[i % 3], w[3], 100, "BTC", linked=True),
                  TransferSpec(f"pay{i}:fee", w[i % 3], b.platform.fees.id, 2, "BTC")]
    async with sessions() as s, s.begin():
        with statements(engine) as seen:
            outcomes = await ledger_store.create_transfers(s, specs)
    assert seen == ["SELECT", "WITH"]
    assert [o.result for o in outcomes] == [Result.CREATED] * 20
    async with sessions() as s:
        for o in outcomes:
            assert await ledger_store.lookup_transfer(s, o.id) == o.transfer
    assert [o.transfer.linked for o in outcomes if o.transfer] == [True, False] * 10
    assert (await account(sessions, b.platform.fees.id)).balances.credits_posted == 20
