"""The screening's fast path (issue 12's ≤ 2 ms): rules compiled to closures must decide
exactly as the rule trees say, and the feature statement, bound with the last live set's
parameters, must read again when the live set's parameters changed."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text, update

from satvault.accounts import service as acc
from satvault.db import utcnow
from satvault.kernel.ids import new_id
from satvault.ledger.models import LedgerTransfer
from satvault.ledger.platform import ensure_platform_accounts
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.payouts.service import _summed, _usage_unlocked
from satvault.reconcile.checks import records_way
from satvault.risk.features import Event, _query, _query_values, _values, read_features
from satvault.risk.models import RiskAddressLabel
from satvault.risk.rollups import rollup_drift
from satvault.risk.rules import All, AnyOf, Comparison, Not, Params, evaluate, parse_rule_set
from tests.risk.conftest import ADDR, SAT, Ctx, default_doc
from tests.statements import count_statements
from tests.test_cli import last_json, sv_here


def _holds(cond: Any, f: Mapping[str, Any], seen: dict[str, Any]) -> bool:
    """The rule tree read literally (the reference the closures are checked against)."""
    if isinstance(cond, All):
        return all([_holds(c, f, seen) for c in cond.all])
    if isinstance(cond, AnyOf):
        return any([_holds(c, f, seen) for c in cond.any])
    if isinstance(cond, Not):
        return not _holds(cond.not_, f, seen)
    assert isinstance(cond, Comparison)
    left = seen[cond.field] = f.get(cond.field)
    right = cond.value
    if cond.ref is not None:
        right = seen[cond.ref] = f.get(cond.ref)
    if cond.op == "eq":
        return bool(left == right)
    if cond.op == "ne":
        return bool(left != right)
    if cond.op == "in":
        return left in (right or ())
    if cond.op == "not_in":
        return left not in (right or ())
    if cond.op == "contains":
        return isinstance(left, list) and right in left
    if left is None or right is None:
        return False
    return bool({"lt": left < right, "lte": left <= right, "gt": left > right,
                 "gte": left >= right}[cond.op])


RULES = {"thresholds": {"review": 30, "reject": 60}, "rules": [
    {"id": "r_eq", "score": 7, "when": {"field": "rail", "op": "eq", "value": "onchain"}},
    {"id": "r_ne", "score": 3, "when": {"field": "direction", "op": "ne", "value": "in"}},
    {"id": "r_in", "score": 5, "when": {"field": "rail", "op": "in",
                                        "value": ["lightning", "internal"]}},
    {"id": "r_not_in", "score": 2, "when": {"field": "asset", "op": "not_in", "value": ["BTC"]}},
    {"id": "r_contains", "score": 11, "when": {"field": "destination_labels", "op": "contains",
                                               "value": "exchange"}},
    {"id": "r_ref", "score": 13, "when": {"field": "velocity.sum.24h", "op": "gte",
                                          "ref": "agg.in.sum.24h"}},
    {"id": "r_tree", "score": 17, "when": {"any": [
        {"all": [{"field": "amount_msat", "op": "gt", "value": 500},
                 {"not": {"field": "kyc_tier", "op": "lte", "value": 1}}]},
        {"field": "amount_zscore", "op": "lt", "value": -1.5}]}},
    {"id": "r_field", "score_field": "destination_label_score",
     "when": {"field": "destination_label_score", "op": "gt", "value": 0}},
]}


def test_compiled_rules_decide_as_the_rule_trees_read():
    doc = parse_rule_set({**RULES, "rules": RULES["rules"] + default_doc()["rules"]})
    rng = random.Random(5)

    def maybe(v: Any) -> Any:
        return None if rng.random() < 0.1 else v
    for _ in range(2000):
        f = {"rail": maybe(rng.choice(["onchain", "lightning", "internal", "refund"])),
             "direction": maybe(rng.choice(["in", "out"])), "asset": maybe("BTC"),
             "destination_labels": maybe(rng.sample(["exchange", "mixer", "gambling"],
                                                    rng.randint(0, 2))),
             "velocity.sum.24h": maybe(rng.randint(0, 1000)),
             "agg.in.sum.24h": maybe(rng.randint(0, 1000)),
             "amount_msat": maybe(rng.randint(0, 1000)), "kyc_tier": maybe(rng.randint(0, 3)),
             "amount_zscore": maybe(rng.uniform(-3, 3)),
             "destination_label_score": maybe(rng.randint(0, 40))}
        f = {k: v for k, v in f.items() if v is not None or rng.random() < 0.5}
        verdict = evaluate(doc, f)
        total = 0
        for rule, got in zip(doc.rules, verdict.results, strict=True):
            seen: dict[str, Any] = {}
            hit = _holds(rule.when, f, seen)
            score = 0
            if hit:
                if rule.score_field is not None:
                    seen[rule.score_field] = f.get(rule.score_field) or 0
                    score = int(seen[rule.score_field])
                else:
                    score = rule.score
            total += score
            assert (got.id, got.matched, got.score, got.inputs) == (rule.id, hit, score, seen)
        assert verdict.score == total


async def test_new_parameters_of_the_live_set_apply_to_the_next_screening(ctx: Ctx):
    await ctx.out(95_000 * SAT, n=2)  # in the structuring band of a 100,000-sat threshold
    before = await ctx.screen(ctx.event(1_000 * SAT))
    assert before.features["structuring_count"] == 0  # the default threshold: 0.01 BTC
    doc = default_doc()
    doc["params"] = {**doc.get("params", {}), "structuring_threshold_msat": 100_000 * SAT}
    version = await ctx.live(doc)
    engine = ctx.sessions.kw["bind"]
    with count_statements(engine) as n:
        after = await ctx.screen(ctx.event(1_000 * SAT))
    assert after.version == version and after.features["structuring_count"] == 2
    features = [s for s in n.sql if _reads_features(s)]
    assert len(features) == 2, str(n)  # bound with the old parameters, then read again
    with count_statements(engine) as n:
        again = await ctx.screen(ctx.event(1_000 * SAT))
    assert again.features == after.features
    assert sum(_reads_features(s) for s in n.sql) == 1, str(n)  # the new ones now


def _reads_features(sql: str) -> bool:
    """The feature statement: the query itself (SQLite), or the function that takes the
    wallet's lock and runs it (PostgreSQL)."""
    return '"out.count.1h"' in sql or "risk_screen_features(" in sql


async def test_postgresql_function_reads_the_same_features_as_the_query(ctx: Ctx):
    """On PostgreSQL the lock and the features are one call of a function (migration 0035,
    its body replaced by 0037); its query is a copy of the one ``features.py`` builds (which
    SQLite runs): for the same history, events and parameters both must return the same row,
    column for column."""
    engine = ctx.sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no stored functions and runs the query")
    await ctx.screen(ctx.event(SAT))  # the shipped rule set becomes live
    now = utcnow()
    await ctx.out(95_000 * SAT, n=2)  # in a structuring band below
    await ctx.out(3_000 * SAT, ago=timedelta(hours=3), destination="bc1qother")
    await ctx.out(4_000 * SAT, ago=timedelta(days=3))
    await ctx.out(5_000 * SAT, ago=timedelta(days=20), destination="bc1qolder")
    await ctx.out(6_000 * SAT, ago=timedelta(days=45))  # outside every window
    await ctx.into(70_000 * SAT)
    async with ctx.sessions() as s, s.begin():
        await s.execute(insert(RiskAddressLabel), [
            {"address": addr, "label": label, "score": score, "source": "test",
             "first_seen_at": now - timedelta(days=days), "loaded_at": now}
            for addr, label, score, days in (
                (ADDR, "exchange", 5, 400), (ADDR, "gambling", 20, 10),
                ("bc1qsender", "mixer", 40, 3), ("bc1qbad", "sanctioned", 100, 1))])
    params = Params(structuring_threshold_msat=100_000 * SAT)
    events = [
        ctx.event(1_000 * SAT),
        ctx.event(2_000 * SAT, destination="bc1qother", counterparty="bc1qbad", rail="lightning"),
        ctx.event(9_000 * SAT, destination="", counterparty="bc1qnew"),
        dataclasses.replace(ctx.event(7_000 * SAT, direction="in"),
                            senders=("bc1qsender", "bc1qbad")),
        dataclasses.replace(ctx.event(1_000 * SAT), owner_type="merchant",
                            owner_id="mer_none"),
    ]
    rows = []
    for ev in events:
        got = await _function_matches_query(ctx, ev, params, now)
        assert got["wallet"] == ctx.wallet.id and got["live_version"] is not None
        rows.append(got)
    # The history reached every part of the row (not a comparison of zeros).
    assert [bool(r["sanctioned"]) for r in rows] == [False, True, False, True, False]
    first = rows[0]
    assert first["out.count.1h"] == 2 and first["out.count.30d"] == 5
    assert first["out.counterparties.30d"] == 3 and first["out.band"] == 2
    assert first["in.count.1h"] == 1 and first["in.rapid"] > 0 and first["seen"] == 4
    assert first["label_score"] == 25 and first["first_seen"] is not None


async def _function_matches_query(ctx: Ctx, ev: Event, params: Params, now: datetime, *,
                                  lock: bool = True) -> dict[str, Any]:
    """The function's row (PostgreSQL's path: roll-ups for the outgoing windows since
    migration 0039, for money in since 0040, folded first when ``lock``) against the
    row-by-row query SQLite runs, on the same snapshot's data: the same columns in the same
    order, the same values (sums of floats to float precision: the function adds exact
    numerics and rounds once). Returns the function's row."""
    async with ctx.sessions() as s, s.begin():
        got = await read_features(s, ev, params, now, lock=lock)
        kind = "user" if ev.owner_type == "user" else "merchant"
        values = _query_values(ev, _values(ev, params, now))
        query = _query("postgresql", kind, many_parties=bool(ev.senders))
        want = dict((await s.execute(query, values)).mappings().one())
    assert list(got) == list(want)
    for key in want:
        # Labels are aggregated in no particular order.
        if key == "labels" and want[key]:
            same = sorted(got[key].split(",")) == sorted(want[key].split(","))
        elif isinstance(want[key], float):
            same = math.isclose(got[key], want[key], rel_tol=1e-12)
        else:
            same = got[key] == want[key]
        assert same, (ev, now, key, got[key], want[key])
    return got


async def test_counterparties_and_seen_count_live_withdrawals_only(ctx: Ctx):
    """Distinct destinations per window and earlier payments to a destination, as the rules
    read them, on both databases: a destination counts in a window when a *live* withdrawal
    to it falls in that window (a failed or cancelled latest one does not move it in), and
    ``seen`` counts the live ones of all time, compared exactly (not by the index's hash)."""
    wd = WithdrawalStatus
    await ctx.out(SAT, ago=timedelta(minutes=10), destination="bc1qa")
    await ctx.out(SAT, ago=timedelta(days=2), destination="bc1qa")
    await ctx.out(SAT, ago=timedelta(days=3), destination="bc1qb")
    await ctx.out(SAT, ago=timedelta(minutes=5), destination="bc1qb", status=wd.FAILED)
    await ctx.out(SAT, ago=timedelta(minutes=5), destination="bc1qc", status=wd.CANCELLED)
    await ctx.out(SAT, ago=timedelta(hours=30), destination="bc1qd", status=wd.REVIEW)
    await ctx.out(SAT, ago=timedelta(days=40), destination="bc1qe", n=2)  # outside 30 days
    await ctx.out(SAT, ago=timedelta(hours=20), destination="bc1qE")  # another destination
    got = {}
    for dest in ("bc1qa", "bc1qb", "bc1qc", "bc1qd", "bc1qe", "bc1qnew"):
        f = (await ctx.screen(ctx.event(SAT, destination=dest))).features
        got[dest] = f["destination_seen_count"]
        counts = [f[f"agg.out.counterparties.{w}"] for w in ("1h", "24h", "7d", "30d")]
        # a (10 min), E (20 h), d (30 h, held for review: live), b (3 days); c never
        assert counts == [1, 2, 4, 4], (dest, counts)
    assert got == {"bc1qa": 2, "bc1qb": 1, "bc1qc": 0, "bc1qd": 1, "bc1qe": 2, "bc1qnew": 0}


# The roll-ups of migration 0039: what the trigger keeps must be what the rows say.
_FROM_ROWS = """
SELECT kind, span, start, n, total, sq FROM (
  SELECT 'out' AS kind, s.span,
         (floor(extract(epoch FROM w.created_at) / s.span) * s.span)::bigint AS start,
         count(*) AS n, sum(w.amount_msat) AS total, sum(w.amount_msat * w.amount_msat) AS sq
    FROM withdrawals w, (VALUES (60), (3600), (86400)) AS s(span)
   WHERE w.wallet_id = :wallet AND w.status NOT IN ('failed', 'cancelled')
   GROUP BY 1, 2, 3
  UNION ALL
  SELECT 'rail:' || w.method, s.span,
         (floor(extract(epoch FROM w.created_at) / s.span) * s.span)::bigint,
         count(*), sum(w.amount_msat), sum(w.amount_msat * w.amount_msat)
    FROM withdrawals w, (VALUES (60), (3600), (86400)) AS s(span)
   WHERE w.wallet_id = :wallet AND w.status NOT IN ('failed', 'cancelled')
   GROUP BY 1, 2, 3
  UNION ALL
  SELECT 'party', s.span, (floor(extract(epoch FROM d.last_at) / s.span) * s.span)::bigint,
         count(*), 0, 0
    FROM (SELECT max(w.created_at) AS last_at FROM withdrawals w
           WHERE w.wallet_id = :wallet AND w.status NOT IN ('failed', 'cancelled')
           GROUP BY w.destination) AS d, (VALUES (60), (3600), (86400)) AS s(span)
   GROUP BY 1, 2, 3) AS x
"""


async def _rollups_match_rows(ctx: Ctx) -> int:
    """The wallet's roll-up rows (those not emptied) equal a fresh aggregation of its
    withdrawals; returns how many buckets hold something."""
    async with ctx.sessions() as s:
        kept = {tuple(r[:3]): tuple(int(v) for v in r[3:]) for r in await s.execute(text(
            "SELECT kind, span, start, n, total, sq FROM risk_rollups "
            "WHERE wallet_id = :wallet AND n > 0"), {"wallet": ctx.wallet.id})}
        emptied = (await s.execute(text(
            "SELECT count(*) FROM risk_rollups WHERE wallet_id = :wallet AND n = 0 "
            "AND (total <> 0 OR sq <> 0)"), {"wallet": ctx.wallet.id})).scalar_one()
        fresh = {tuple(r[:3]): tuple(int(v) for v in r[3:]) for r in await s.execute(
            text(_FROM_ROWS), {"wallet": ctx.wallet.id})}
    assert emptied == 0
    assert kept == fresh
    return len(kept)


async def _credit(ctx: Ctx, rows: list[tuple[datetime, int]], *, kind: str = "single") -> None:
    """Credits to the wallet's account at the given times, in one INSERT; ``kind`` single or
    pending (a pending credit is no money in yet). Rows only: the screening's incoming
    windows read them; nobody's balance moves."""
    async with ctx.sessions() as s, s.begin():
        equity = (await ensure_platform_accounts(s, "BTC")).equity.id
        snapshot = dict.fromkeys(
            (f"{side}_{what}_{state}" for side in ("dr", "cr") for what in ("debits", "credits")
             for state in ("posted", "pending")), 0)
        await s.execute(insert(LedgerTransfer), [
            {"id": new_id("tr"), "debit_account_id": equity,
             "credit_account_id": ctx.wallet.ledger_account_id, "amount": amount,
             "asset": "BTC", "kind": kind, "pending_id": None,
             "state": "pending" if kind == "pending" else None, "timeout_seconds": 0,
             "expires_at": None, "linked": False, "code": "test", "ref": "test",
             "created_at": at, **snapshot} for at, amount in rows])


async def _limit_sums_match_rows(ctx: Ctx, now: datetime) -> None:
    """``withdrawal_usage`` (the limits' sums, from the roll-ups since migration 0039) gives
    what summing the rows gives (the query SQLite and the views run), on every rail; and so
    does ``withdrawals_spent_since``."""
    day, month = now - timedelta(hours=24), now - timedelta(days=30)
    async with ctx.sessions() as s, s.begin():
        for rail in WithdrawalMethod:
            got = (await s.execute(text(
                "SELECT spent_day, rail_day, rail_month FROM withdrawal_usage("
                ":w, :rail, :day, :month)"),
                {"w": ctx.wallet.id, "rail": rail.value, "day": day, "month": month})).one()
            u = _usage_unlocked(_summed, ctx.wallet.id, rail.value, day, month)
            want = (await s.execute(select(u.c.spent_day, u.c.rail_day, u.c.rail_month))).one()
            assert tuple(got) == tuple(want), (rail, now, got, want)
        spent = (await s.execute(text("SELECT withdrawals_spent_since(:w, :day)"),
                                 {"w": ctx.wallet.id, "day": day})).scalar_one()
        assert spent == want[0]


def _edges(now: datetime) -> list[datetime]:
    """Instants on and beside every edge a window's read has: each window's start, and the
    minute, hour and day boundaries next to it."""
    out = []
    for sec in (3600, 86400, 7 * 86400, 30 * 86400):
        since = now - timedelta(seconds=sec)
        epoch = since.timestamp()
        for span in (60, 3600, 86400):
            for b in (math.floor(epoch / span) * span, math.ceil(epoch / span) * span):
                at = datetime.fromtimestamp(b, tz=since.tzinfo)
                out += [at, at - timedelta(microseconds=1), at + timedelta(microseconds=1)]
        out += [since, since - timedelta(microseconds=1), since + timedelta(microseconds=1)]
    return out


async def _add(ctx: Ctx, rows: list[tuple[datetime, int, str, WithdrawalStatus]], *,
               methods: list[WithdrawalMethod] | None = None) -> list[str]:
    ids = [new_id("wd") for _ in rows]
    rails = methods or [WithdrawalMethod.LIGHTNING] * len(rows)
    async with ctx.sessions() as s, s.begin():
        await s.execute(insert(Withdrawal), [
            {"id": wid, "wallet_id": ctx.wallet.id, "method": method,
             "destination": dest, "script_pubkey": None, "amount_msat": amount,
             "fee_reserve_msat": 0, "fee_msat": None, "status": status, "batch_id": None,
             "txid": None, "hold_id": f"wd:{wid}:hold", "created_at": at, "updated_at": at}
            for wid, (at, amount, dest, status), method in zip(ids, rows, rails, strict=True)])
    return ids


async def test_rollups_give_the_rows_answer_at_every_edge(ctx: Ctx):
    """Withdrawals on, just before and just after every edge a window's read has (the
    window's start, the minute, hour and day boundaries beside it), a destination's latest
    failing, cancelled, moved, changed and deleted: after each step the roll-ups equal a
    fresh aggregation of the rows, and the function reads what the row-by-row query reads,
    for several ``now``."""
    if ctx.sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite reads the rows (migration 0039)")
    rng = random.Random(39)
    now = utcnow()
    st = WithdrawalStatus
    live = [st.CONFIRMED, st.PENDING, st.REVIEW, st.BROADCAST, st.AWAITING_APPROVAL]
    dests = [f"lnbc{i}" for i in range(6)] + ["x" * 2000, "bc1q\u00e9"]
    times = _edges(now) + [now - timedelta(seconds=rng.uniform(0, 40 * 86400))
                           for _ in range(60)] + [now + timedelta(seconds=30)]
    rows = [(at, rng.choice([1, SAT, 95_000 * SAT, rng.randint(1, 10**12), 21 * 10**17]),
             rng.choice(dests), rng.choice([*live, st.FAILED, st.CANCELLED]))
            for at in times]
    # on-chain rows need a batch once confirmed: the two other rails, the third left empty
    rails = [WithdrawalMethod.LIGHTNING, WithdrawalMethod.INTERNAL]
    ids = await _add(ctx, rows, methods=[rng.choice(rails) for _ in rows])
    await _credit(ctx, [(at, rng.choice([1, SAT, 95_000 * SAT, 21 * 10**17])) for at in times])
    await _credit(ctx, [(now, SAT)], kind="pending")  # not money in
    await _credit(ctx, [(times[3], 3 * SAT)])  # one more into a bucket already there
    assert await _rollups_match_rows(ctx) > 100
    params = Params(structuring_threshold_msat=100_000 * SAT)
    nows = [now, now + timedelta(seconds=37), now + timedelta(hours=1, seconds=7),
            now - timedelta(days=3, minutes=1)]

    async def compare() -> list[dict[str, Any]]:
        for at in nows:  # the withdrawal limits' sums, from the same roll-ups
            await _limit_sums_match_rows(ctx, at)
        return [await _function_matches_query(ctx, ctx.event(SAT, destination=d), params, at)
                for at in nows for d in (dests[0], dests[6])]

    first = await compare()
    assert first[0]["out.count.30d"] > 30 and first[0]["out.counterparties.1h"] >= 1
    assert first[0]["in.count.30d"] > 30 and first[0]["in.count.1h"] >= 1
    assert first[0]["in.rapid"] > 0 and any(r["in.band"] for r in first)

    # Each destination's latest live withdrawal fails or is cancelled, then others change.
    async with ctx.sessions() as s, s.begin():
        latest = (await s.execute(text(
            "SELECT DISTINCT ON (destination) id FROM withdrawals WHERE wallet_id = :w "
            "AND status NOT IN ('failed', 'cancelled') ORDER BY destination, created_at DESC"),
            {"w": ctx.wallet.id})).scalars().all()
    for wid in latest:
        async with ctx.sessions() as s, s.begin():
            await s.execute(update(Withdrawal).where(Withdrawal.id == wid).values(
                status=rng.choice([st.FAILED, st.CANCELLED])))
    assert await _rollups_match_rows(ctx)
    await compare()
    picks = rng.sample(ids, 40)
    async with ctx.sessions() as s, s.begin():
        for wid in picks[:10]:  # back to live (what a retried payment would do)
            await s.execute(update(Withdrawal).where(Withdrawal.id == wid).values(
                status=st.PENDING))
        for wid in picks[10:20]:
            await s.execute(update(Withdrawal).where(Withdrawal.id == wid).values(
                amount_msat=rng.randint(1, 10**15)))
        for wid in picks[20:28]:
            await s.execute(update(Withdrawal).where(Withdrawal.id == wid).values(
                created_at=rng.choice(times)))
        for wid in picks[28:34]:
            await s.execute(update(Withdrawal).where(Withdrawal.id == wid).values(
                destination=rng.choice(dests)))
        await s.execute(delete(Withdrawal).where(Withdrawal.id.in_(picks[34:])))
    assert await _rollups_match_rows(ctx)
    await compare()


async def test_rollups_stay_exact_under_racing_writers(ctx: Ctx):
    """Eight writers at once on one wallet, without its row lock (as the payer and the payout
    job change withdrawals beside a payment): inserts into the same minute and destinations,
    and failures of each other's rows. The roll-ups end equal to the rows."""
    if ctx.sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite reads the rows (migration 0039)")
    st = WithdrawalStatus
    now = utcnow()
    made: list[str] = []

    async def writer(k: int) -> None:
        rng = random.Random(k)
        for i in range(25):
            at = now - timedelta(microseconds=rng.randint(0, 3_000_000))
            made.extend(await _add(ctx, [(at, rng.randint(1, 10**9), f"lnbc{rng.randint(0, 3)}",
                                          st.PENDING)]))
            if i % 3 == 2:
                wid = rng.choice(made)
                async with ctx.sessions() as s, s.begin():
                    await s.execute(update(Withdrawal).where(Withdrawal.id == wid).values(
                        status=st.FAILED))

    await asyncio.gather(*(writer(k) for k in range(8)))
    assert await _rollups_match_rows(ctx) > 3
    await _function_matches_query(ctx, ctx.event(SAT, destination="lnbc1"), Params(), now)


async def test_rollups_apart_from_the_rows_are_named_and_rebuilt(ctx: Ctx, tmp_path):
    """Rows written with the triggers off (as a data-only restore or a replica applying rows
    does) leave the roll-ups behind: the check and a deep reconciliation name the wallet, the
    CLI rebuilds it, and the screening reads the rows' truth again. On SQLite (no roll-ups)
    the check has nothing to compare."""
    url = ctx.sessions.kw["bind"].url.render_as_string(hide_password=False)
    now = utcnow()
    ids = await _add(ctx, [(now - timedelta(minutes=m), SAT * m, f"lnbc{m % 3}",
                            WithdrawalStatus.CONFIRMED) for m in range(1, 40, 3)])
    async with ctx.sessions() as s:
        assert await rollup_drift(s, now=now) == []
    assert last_json(sv_here("risk", "rollups", "check", url=url, home=tmp_path)) == {
        "ok": True, "apart": []}
    if ctx.sessions.kw["bind"].dialect.name != "postgresql":
        return
    async with ctx.sessions() as s, s.begin():
        await s.execute(text("SET LOCAL session_replication_role = replica"))
        await s.execute(update(Withdrawal).where(Withdrawal.id == ids[-1]).values(
            status=WithdrawalStatus.FAILED))
    async with ctx.sessions() as s, s.begin():
        await s.execute(text("SET LOCAL session_replication_role = replica"))
        await s.execute(insert(Withdrawal), [
            {"id": new_id("wd"), "wallet_id": ctx.wallet.id,
             "method": WithdrawalMethod.LIGHTNING, "destination": "lnbc-restored",
             "script_pubkey": None, "amount_msat": 7 * SAT, "fee_reserve_msat": 0,
             "fee_msat": None, "status": WithdrawalStatus.CONFIRMED, "batch_id": None,
             "txid": None, "hold_id": "wd:restored:hold", "created_at": now,
             "updated_at": now}])
    # A restored withdrawal fails through the normal path: its roll-ups have nothing of it to
    # take out, and the failure (a refund waits on it) goes through all the same.
    async with ctx.sessions() as s, s.begin():
        await s.execute(text("SET LOCAL session_replication_role = replica"))
        await s.execute(insert(Withdrawal), [
            {"id": "wd_restored_2", "wallet_id": ctx.wallet.id,
             "method": WithdrawalMethod.INTERNAL, "destination": "lnbc-gone",
             "script_pubkey": None, "amount_msat": 5 * SAT, "fee_reserve_msat": 0,
             "fee_msat": None, "status": WithdrawalStatus.PENDING, "batch_id": None,
             "txid": None, "hold_id": "wd:restored2:hold",
             "created_at": now - timedelta(days=40), "updated_at": now}])
    async with ctx.sessions() as s, s.begin():  # its buckets (40 days back) do not exist
        await s.execute(update(Withdrawal).where(Withdrawal.id == "wd_restored_2").values(
            status=WithdrawalStatus.FAILED))
    async with ctx.sessions() as s:
        apart = await rollup_drift(s, now=now)
        named = await records_way(s, deep=True)
    kinds = ("latest", "out", "party", "rail:lightning")
    assert {(d.wallet_id, d.kind, d.span) for d in apart} == {
        (ctx.wallet.id, kind, span) for kind in kinds for span in ("minute", "hour", "day")}
    assert all(d.rows[0] == 13 and d.kept[0] == 13 and d.rows[1] != d.kept[1]
               for d in apart if d.kind in ("out", "rail:lightning"))
    # lnbc1 and the restored destination, against lnbc1 alone
    assert all(d.rows[0] == 2 and d.kept[0] == 1 for d in apart if d.kind in ("party", "latest"))
    assert sorted(d.subject for d in named if d.kind == "risk_rollup_mismatch") == sorted(
        f"wallet {ctx.wallet.id} {kind} per {span}" for kind in kinds
        for span in ("minute", "hour", "day"))
    failed = sv_here("risk", "rollups", "check", url=url, home=tmp_path, check=False)
    assert failed.returncode == 1 and len(last_json(failed)["apart"]) == 12

    rebuilt = last_json(sv_here("risk", "rollups", "rebuild", url=url, home=tmp_path))
    assert rebuilt == {"ok": True, "rebuilt": [ctx.wallet.id]}
    assert await _rollups_match_rows(ctx)
    got = await _function_matches_query(ctx, ctx.event(SAT, destination="lnbc-restored"),
                                        Params(), now)
    assert got["out.count.1h"] == 13 and got["seen"] == 1
    assert last_json(sv_here("risk", "rollups", "rebuild", "--all", url=url,
                             home=tmp_path))["rebuilt"] == ["(all)"]
    assert last_json(sv_here("risk", "rollups", "check", url=url, home=tmp_path))["ok"]


async def _buffers(ctx: Ctx, sql: str, params: dict[str, Any]) -> int:
    """Shared buffers the statement touches (its nested statements included): what it reads,
    a count that does not depend on the machine's speed. Run eight times on one connection
    and measured the last time, in the steady state of a pool's long-lived connection: a
    PL/pgSQL statement's plan is custom for its first five runs and generic from the sixth
    on, and the run that builds the generic plan reads the catalogue too (~35 buffers more:
    measuring the third run, the busier wallet's was that sixth run on a reused connection)."""
    async with ctx.sessions() as s, s.begin():
        for _ in range(8):
            plan = (await s.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"),
                                    params)).scalar_one()
    top = plan[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


async def test_a_busier_wallets_screening_and_limits_read_no_more(ctx: Ctx, sessions):
    """The screening and the limits' sums read as much for a wallet with 6,000 payments out
    and 6,000 in in the last hour as for one with 1,500 of each in the same minutes (the same
    buckets, each of them written over and over); before migrations 0039 and 0040 they read
    every payment of the window, four times as many buffers for the busier one. So does one
    more payment's INSERT, whose trigger moves a destination's latest payment out of its old
    buckets."""
    if ctx.sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite reads the rows (migration 0039)")
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="busy@example.com")
        busy = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
    quiet = ctx
    loud = Ctx(ctx.sessions, busy)
    now = utcnow()
    for who, n in ((quiet, 1500), (loud, 6000)):  # spread alike over the hour's minutes
        await _add(who, [(now - timedelta(seconds=i * 3600 / n), SAT + i, f"lnbc{i}",
                          WithdrawalStatus.CONFIRMED) for i in range(n)])
        # and as much money in (migration 0040): a store's incoming payments
        await _credit(who, [(now - timedelta(seconds=(i + 0.5) * 3600 / n), SAT + i)
                            for i in range(n)])
    # A hot bucket's earlier row versions are read until vacuum prunes them (autovacuum does,
    # on a table this small, soon and often): measured after it, as a running system is.
    engine = ctx.sessions.kw["bind"]
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE withdrawals, risk_last_paid, risk_rollups, "
                                "ledger_transfers"))
    read = {}
    for who in (quiet, loud):
        values = _values(who.event(SAT), Params(), now)
        screen = await _buffers(who, (
            "SELECT * FROM risk_screen_features(true, :wallet, :account, :owner, false, "
            ":destination, :counterparty, ARRAY[:destination], :since, :since_1h, "
            ":since_24h, :since_7d, :since_30d, :s_since, :r_since, :low, :top)"), values)
        usage = await _buffers(who, (
            "SELECT * FROM withdrawal_usage(:wallet, 'lightning', :day, :month)"),
            {"wallet": who.wallet.id, "day": now - timedelta(hours=24),
             "month": now - timedelta(days=30)})
        # one more payment to a destination paid before: its old latest leaves its buckets
        paid = await _buffers(who, (
            "INSERT INTO withdrawals (id, wallet_id, method, destination, amount_msat, "
            "fee_reserve_msat, status, hold_id, created_at, updated_at) SELECT i, :wallet, "
            "'lightning', 'lnbc5', 1000, 0, 'confirmed', i, clock_timestamp(), now() "
            "FROM (SELECT 'wd_' || md5(random()::text) AS i) AS x"),
            {"wallet": who.wallet.id})
        read[who.wallet.id] = (screen, usage, paid)
    (q_screen, q_usage, q_paid) = read[quiet.wallet.id]
    (l_screen, l_usage, l_paid) = read[loud.wallet.id]
    assert l_screen <= q_screen + 25, read
    assert l_usage <= q_usage + 10, read
    assert l_paid <= q_paid + 10, read
