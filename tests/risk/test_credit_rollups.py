"""Money in from roll-ups folded at screening time (PostgreSQL, migration 0040): what the
screening reads of a wallet's credits must be what the credits say, however they arrived
(one by one, in batches, posted from a hold, racing each other and the screenings), with or
without the wallet's lock; the check names roll-ups apart from the credits and the CLI
rebuilds them. SQLite reads the credits themselves (the reference these tests compare with)."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, text

from satvault.accounts import service as acc
from satvault.db import utcnow
from satvault.kernel.ids import new_id
from satvault.ledger.check import check_ledger
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import create_transfers
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.risk.features import read_features
from satvault.risk.rollups import rebuild_rollups, rollup_drift
from satvault.risk.rules import Params
from tests.risk.conftest import SAT, Ctx
from tests.risk.test_screening_path import (
    _add,
    _buffers,
    _credit,
    _edges,
    _function_matches_query,
)
from tests.test_cli import last_json, sv_here

_FOLDED = """
SELECT s.span, (floor(extract(epoch FROM t.created_at) / s.span) * s.span)::bigint AS start,
       count(*), sum(t.amount), sum(t.amount * t.amount),
       count(*) FILTER (WHERE t.amount >= k.band_low AND t.amount < k.band_top)
  FROM ledger_transfers t, risk_in_marks k, (VALUES (60), (3600), (86400)) AS s(span)
 WHERE t.credit_account_id = :account AND t.kind IN ('single', 'post')
   AND k.account_id = :account AND t.seq <= k.seq
 GROUP BY 1, 2
"""


def _pg_only(ctx: Ctx) -> None:
    if ctx.sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite reads the credits (migration 0040)")


async def _folded_match_rows(ctx: Ctx) -> tuple[int, int]:
    """The account's credit roll-ups equal a fresh aggregation of its credits up to its mark
    (the band's count with the band kept in the mark); returns (buckets, credits not folded
    yet)."""
    account = ctx.wallet.ledger_account_id
    async with ctx.sessions() as s:
        kept = {(r[0], r[1]): tuple(int(v) for v in r[2:]) for r in await s.execute(text(
            "SELECT span, start, n, total, sq, band FROM risk_in_rollups WHERE account_id = :a"),
            {"a": account})}
        fresh = {(r[0], r[1]): tuple(int(v) for v in r[2:]) for r in await s.execute(
            text(_FOLDED), {"account": account})}
        unfolded = (await s.execute(text(
            "SELECT count(*) FROM ledger_transfers WHERE credit_account_id = :a AND seq > "
            "coalesce((SELECT seq FROM risk_in_marks WHERE account_id = :a), 0)"),
            {"a": account})).scalar_one()
    assert kept == fresh
    return len(kept), int(unfolded)


async def _ledger_credits(ctx: Ctx, rows: list[tuple[datetime, int]], *,
                          batch: bool = False) -> None:
    """Credits to the wallet through the ledger (which locks both accounts first): one
    transfer per transaction, or (``batch``) all in one batch, each at its own time."""
    async with ctx.sessions() as s, s.begin():
        equity = (await ensure_platform_accounts(s, "BTC")).equity.id
    groups = [rows] if batch else [[r] for r in rows]
    for group in groups:
        async with ctx.sessions() as s, s.begin():
            for at, amount in group:
                outcome, = await create_transfers(s, [TransferSpec(
                    new_id("in"), equity, ctx.wallet.ledger_account_id, amount, "BTC")],
                    now=at)
                assert outcome.ok, outcome


async def test_credits_read_from_the_rollups_give_the_rows_answer(ctx: Ctx):
    """Credits on and beside every edge a window's read has, arriving in three waves (the
    ledger's one-transfer path, a batch, rows written as a restore writes them), with
    screenings between them that fold: after each, the roll-ups hold exactly the credits up
    to the mark, and the function (under the wallet's lock, as the withdrawal and deposit
    paths call it, or not) returns what the row-by-row query returns, for several ``now``."""
    _pg_only(ctx)
    rng = random.Random(40)
    now = utcnow()
    edges = _edges(now)
    amounts = [1, SAT, 95_000 * SAT, 21 * 10**17]
    params = Params(structuring_threshold_msat=100_000 * SAT)
    nows = [now, now + timedelta(seconds=37), now + timedelta(hours=1, seconds=7),
            now - timedelta(days=3, minutes=1)]

    async def compare(*, lock: bool) -> list[dict[str, object]]:
        return [await _function_matches_query(ctx, ctx.event(SAT), params, at, lock=lock)
                for at in nows]

    # The edges fall in the rapid-movement window (the last 30 minutes) only at some times
    # of the hour; one credit a minute old puts money in it whatever the clock says.
    first_wave = [*edges[:40], now - timedelta(minutes=1)]
    await _ledger_credits(ctx, [(at, rng.choice(amounts)) for at in first_wave])
    first = (await compare(lock=True))[0]
    buckets, unfolded = await _folded_match_rows(ctx)
    assert buckets > 20 and unfolded == 0
    assert first["in.count.30d"] >= 30 and first["in.count.1h"] >= 1
    assert first["in.rapid"] > 0

    # A batch into buckets already there and new ones, then pending credits (no money in)
    # and rows inserted without the ledger, as a restore writes them: read before any fold.
    await _ledger_credits(ctx, [(at, rng.choice(amounts)) for at in edges[20:]], batch=True)
    await _credit(ctx, [(now, SAT)], kind="pending")
    await _credit(ctx, [(at, rng.choice(amounts)) for at in edges[::7]])
    assert (await _folded_match_rows(ctx))[1] > 20
    unlocked = await compare(lock=False)  # a read without the wallet's lock folds as well
    assert (await _folded_match_rows(ctx))[1] == 0
    folded_read = await compare(lock=True)  # and a second fold finds nothing new
    assert unlocked == folded_read
    assert folded_read[0]["in.count.30d"] > first["in.count.30d"]

    # The live rule set moves the structuring band: the buckets' band counts are rebuilt once
    # from the credits, then folded with the new band.
    # (and its window and the rapid sum's: their own, or the same as the 7-day and 1-hour one)
    for threshold, days, rapid in ((21 * 10**17 + 1, 7, 60), (SAT + 1, 3, 17),
                                   (100_000 * SAT, 7, 30)):
        params = Params(structuring_threshold_msat=threshold, structuring_days=days,
                        rapid_minutes=rapid)
        moved = await compare(lock=True)
        assert (await _folded_match_rows(ctx))[1] == 0
        assert any(r["in.band"] for r in moved)
        await _ledger_credits(ctx, [(now, threshold - 1)])
        assert (await compare(lock=True))[0]["in.band"] == moved[0]["in.band"] + 1
    assert any(r["in.band"] for r in folded_read)


async def test_credit_rollups_exact_under_racing_ledger_writers_and_screenings(ctx: Ctx):
    """Six ledger writers crediting one wallet at once (single transfers, batches, holds
    posted later) while three screenings of that wallet fold again and again: every credit
    is folded exactly once (none skipped by a fold that ran while it was being written, none
    twice), and the function then returns what the rows say."""
    _pg_only(ctx)
    async with ctx.sessions() as s, s.begin():
        equity = (await ensure_platform_accounts(s, "BTC")).equity.id
    account = ctx.wallet.ledger_account_id
    stop = asyncio.Event()
    folds = 0

    async def writer(k: int) -> None:
        rng = random.Random(k)
        for i in range(20):
            async with ctx.sessions() as s, s.begin():
                if i % 4 == 3:  # a hold, posted in a transaction of its own below
                    hold = new_id("hold")
                    outcome, = await create_transfers(s, [TransferSpec(
                        hold, equity, account, rng.randint(1, 10**9), "BTC",
                        kind=TransferKind.PENDING)])
                else:
                    hold = None
                    specs = [TransferSpec(new_id("in"), equity, account, rng.randint(1, 10**9),
                                          "BTC") for _ in range(1 + (i % 3 == 1) * 4)]
                    outcomes = await create_transfers(s, specs)
                    assert all(o.ok for o in outcomes), outcomes
            if hold is not None:
                async with ctx.sessions() as s, s.begin():
                    outcome, = await create_transfers(s, [TransferSpec(
                        new_id("post"), kind=TransferKind.POST, pending_id=hold)])
                    assert outcome.ok, outcome
            await asyncio.sleep(0)

    async def screener() -> None:
        nonlocal folds
        while not stop.is_set():
            async with ctx.sessions() as s, s.begin():
                await read_features(s, ctx.event(SAT), Params(), utcnow(), lock=True)
            folds += 1

    screeners = [asyncio.create_task(screener()) for _ in range(3)]
    await asyncio.gather(*(writer(k) for k in range(6)))
    stop.set()
    await asyncio.gather(*screeners)
    assert folds > 10
    await _function_matches_query(ctx, ctx.event(SAT), Params(), utcnow())
    buckets, unfolded = await _folded_match_rows(ctx)
    assert buckets >= 3 and unfolded == 0
    async with ctx.sessions() as s:
        n = (await s.execute(text(
            "SELECT sum(n) FROM risk_in_rollups WHERE account_id = :a AND span = 86400"),
            {"a": account})).scalar_one()
    # per writer: ten single credits, five batches of five, five holds posted
    assert n == 6 * sum(1 if i % 4 == 3 else 5 if i % 3 == 1 else 1 for i in range(20))
    async with ctx.sessions() as s:  # and the money the racing writers moved adds up
        report = await check_ledger(s)
    assert report.ok, report.problems


async def test_credit_rollups_apart_from_the_credits_are_named_and_rebuilt(ctx: Ctx, tmp_path):
    """Roll-ups changed by hand are named by the check (kind ``in``) and rebuilt by the CLI;
    the screening then reads the credits' truth again."""
    _pg_only(ctx)
    url = ctx.sessions.kw["bind"].url.render_as_string(hide_password=False)
    now = utcnow()
    await _ledger_credits(ctx, [(now - timedelta(minutes=m), m * SAT) for m in range(1, 30, 4)])
    await _function_matches_query(ctx, ctx.event(SAT), Params(), now)  # folds
    async with ctx.sessions() as s:
        assert await rollup_drift(s, now=now) == []
    async with ctx.sessions() as s, s.begin():
        await s.execute(text("UPDATE risk_in_rollups SET n = n + 1, total = total + 5 "
                             "WHERE account_id = :a"), {"a": ctx.wallet.ledger_account_id})
    async with ctx.sessions() as s:
        apart = await rollup_drift(s, now=now)
    assert {(d.wallet_id, d.kind, d.span) for d in apart} == {
        (ctx.wallet.id, "in", span) for span in ("minute", "hour", "day")}
    assert all(d.rows[1] + 5 * (d.kept[0] - d.rows[0]) == d.kept[1] for d in apart)
    assert "the credits say" in apart[0].detail
    failed = sv_here("risk", "rollups", "check", url=url, home=tmp_path, check=False)
    assert failed.returncode == 1
    assert last_json(sv_here("risk", "rollups", "rebuild", url=url, home=tmp_path)) == {
        "ok": True, "rebuilt": [ctx.wallet.id]}
    assert (await _folded_match_rows(ctx))[1] == 0
    got = await _function_matches_query(ctx, ctx.event(SAT), Params(), now)
    assert got["in.count.1h"] == 8
    assert last_json(sv_here("risk", "rollups", "check", url=url, home=tmp_path))["ok"]


async def test_prune_deletes_only_what_no_window_reads(ctx: Ctx, tmp_path):
    """``satvault risk rollups prune`` deletes the buckets (money out and in) and the
    destinations' latest payments older than 33 days, nothing a window or the check reads:
    the screening still returns the rows' answer, the check still agrees, and a withdrawal
    of before the cut can still fail. Keeping fewer days than the check reads is refused."""
    url = ctx.sessions.kw["bind"].url.render_as_string(hide_password=False)
    if ctx.sessions.kw["bind"].dialect.name != "postgresql":
        assert last_json(sv_here("risk", "rollups", "prune", url=url, home=tmp_path)) == {
            "ok": True, "deleted": {}}
        return
    now = utcnow()
    ages = [timedelta(days=d, minutes=m) for d in (1, 29, 40, 90) for m in (3, 500)]
    old = await _add(ctx, [(now - age, SAT, f"lnbc{i}", WithdrawalStatus.CONFIRMED)
                           for i, age in enumerate(ages)])
    await _ledger_credits(ctx, [(now - age, 2 * SAT) for age in ages])
    before = await _function_matches_query(ctx, ctx.event(SAT), Params(), now)
    async with ctx.sessions() as s:
        counts = dict((await s.execute(text(
            "SELECT 'out', count(*) FROM risk_rollups UNION ALL "
            "SELECT 'in', count(*) FROM risk_in_rollups"))).all())
    refused = sv_here("risk", "rollups", "prune", "--keep-days", "31", url=url, home=tmp_path,
                      check=False)
    assert refused.returncode == 2 and not last_json(refused)["ok"]
    deleted = last_json(sv_here("risk", "rollups", "prune", url=url, home=tmp_path))["deleted"]
    # the destinations last paid 40 and 90 days ago
    assert deleted["out"] > 0 and deleted["in"] > 0 and deleted["latest"] == 4
    async with ctx.sessions() as s:
        left = dict((await s.execute(text(
            "SELECT 'out', count(*) FROM risk_rollups UNION ALL "
            "SELECT 'in', count(*) FROM risk_in_rollups"))).all())
        assert left == {"out": counts["out"] - deleted["out"], "in": counts["in"] - deleted["in"]}
        assert (await s.execute(text("SELECT count(*) FROM risk_rollups WHERE start < "
                                     ":cut"), {"cut": (now - timedelta(days=34)).timestamp()}
                                )).scalar_one() == 0
    assert await _function_matches_query(ctx, ctx.event(SAT), Params(), now) == before
    assert last_json(sv_here("risk", "rollups", "check", url=url, home=tmp_path))["ok"]
    async with ctx.sessions() as s, s.begin():  # a 90-day-old withdrawal fails after all
        await s.execute(text("UPDATE withdrawals SET status = 'failed' WHERE id = :id"),
                        {"id": old[-1]})
    assert await _function_matches_query(ctx, ctx.event(SAT), Params(), now) == before


async def test_a_rebuild_beside_payments_waits_for_them(ctx: Ctx):
    """Rebuilds of a wallet (the CLI's ``--all`` too, which is one after the other) while
    that wallet's payments run, each a screening that folds money in and a withdrawal whose
    trigger moves money out, in one transaction: the rebuild takes their locks in the
    payments' order, so neither side deadlocks, and the roll-ups end equal to the rows."""
    _pg_only(ctx)
    await _ledger_credits(ctx, [(utcnow() - timedelta(minutes=m), SAT) for m in range(5)])

    async def payments() -> None:
        for i in range(25):
            async with ctx.sessions() as s, s.begin():
                await read_features(s, ctx.event(SAT), Params(), utcnow(), lock=True)
                wid = new_id("wd")
                await s.execute(insert(Withdrawal).values(
                    id=wid, wallet_id=ctx.wallet.id, method=WithdrawalMethod.LIGHTNING,
                    destination=f"lnbc{i % 4}", amount_msat=SAT, fee_reserve_msat=0,
                    status=WithdrawalStatus.CONFIRMED, hold_id=f"wd:{wid}:hold",
                    created_at=utcnow(), updated_at=utcnow()))

    async def rebuilds() -> None:
        for _ in range(12):
            async with ctx.sessions() as s, s.begin():
                await rebuild_rollups(s, ctx.wallet.id)

    await asyncio.gather(payments(), payments(), rebuilds())
    async with ctx.sessions() as s:
        assert await rollup_drift(s, now=utcnow()) == []
    await _function_matches_query(ctx, ctx.event(SAT), Params(), utcnow())


async def test_a_screening_plans_every_window_with_its_statement(ctx: Ctx):
    """Every window of money in (the four, the structuring band's, the rapid sum's) is read
    inside the screening's one statement, whatever the rule set's windows: no window runs as
    a function call of its own (parsed and planned on every screening: ~1 ms of the 2 ms a
    screening took with the default 30-minute rapid window before migration 0041).
    ``track_functions`` counts the calls of SQL functions the planner did not inline."""
    _pg_only(ctx)
    await _ledger_credits(ctx, [(utcnow() - timedelta(minutes=m), SAT) for m in (1, 20, 90)])
    async with ctx.sessions() as s, s.begin():  # the first fold (and the band's count)
        await read_features(s, ctx.event(SAT), Params(structuring_threshold_msat=SAT + 1),
                            utcnow())
    for days, rapid in ((7, 30), (7, 60), (3, 17)):  # the default set's; the 7d and 1h; other
        params = Params(structuring_threshold_msat=SAT + 1, structuring_days=days,
                        rapid_minutes=rapid)
        async with ctx.sessions() as s, s.begin():
            await s.execute(text("SET LOCAL track_functions = 'all'"))
            features = await read_features(s, ctx.event(SAT), params, utcnow())
            called = dict((await s.execute(text(
                "SELECT funcname, calls FROM pg_stat_xact_user_functions"))).all())
        assert features["in.band"] == 3 and features["in.rapid"] == (
            2 if rapid > 20 else 1) * SAT, features
        assert set(called) == {"risk_screen_features", "risk_in_fold"}, (days, rapid, called)


async def test_a_fold_reads_no_other_accounts_credits(ctx: Ctx):
    """A screening's fold reads the credit index and nothing of any other account's, the
    table analysed (and not vacuumed) as a busy database's is: for an account with 3,000
    credits folded before and a neighbour (the account numbered next) with 3,000 of its
    own, 27 buffers. Before migration 0043 its plan fetched the account's and the
    neighbour's credits whole from the table, every screening (seen: 6,022 buffers)."""
    _pg_only(ctx)
    now = utcnow()
    async with ctx.sessions() as s, s.begin():
        await ensure_platform_accounts(s, "BTC")  # made before the three below, not between
        wallets = []
        for name in ("busy", "neighbour", "new"):
            user = await acc.create_user(s, email=f"fold-{name}@example.com")
            wallets.append(await acc.ensure_wallet(s, owner_type="user", owner_id=user.id))
    busy, neighbour, new = (Ctx(ctx.sessions, w) for w in wallets)
    assert neighbour.wallet.ledger_account_id == busy.wallet.ledger_account_id + 1
    low, top = 9 * SAT, 10 * SAT
    fold = "SELECT risk_in_fold(:a, :low, :top)"

    async def folded(who: Ctx) -> None:
        async with who.sessions() as s, s.begin():
            await s.execute(text(fold), {"a": who.wallet.ledger_account_id, "low": low,
                                         "top": top})

    history = [(now - timedelta(minutes=m % 600, seconds=m), SAT) for m in range(3000)]
    await _credit(busy, history)
    await folded(busy)  # the mark after its history
    await _credit(busy, [(now, 2 * SAT)])  # one credit to fold
    await _credit(neighbour, history)
    async with ctx.sessions() as s, s.begin():
        await s.execute(text("ANALYZE ledger_transfers"))
    reads = {}
    for who in (busy, new):
        reads[who.wallet.id] = await _buffers(who, fold, {
            "a": who.wallet.ledger_account_id, "low": low, "top": top})
    assert reads[busy.wallet.id] <= 60 and reads[new.wallet.id] <= 10, reads
    _, waiting = await _folded_match_rows(busy)
    assert waiting == 0  # the one credit was folded, by the first of the measured calls
