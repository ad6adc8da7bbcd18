"""The screening's fast path (issue 12's ≤ 2 ms): rules compiled to closures must decide
exactly as the rule trees say, and the feature statement, bound with the last live set's
parameters, must read again when the live set's parameters changed."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from satvault.db import utcnow
from satvault.payouts.models import WithdrawalStatus
from satvault.risk.features import _query, _values, read_features
from satvault.risk.models import RiskAddressLabel
from satvault.risk.rules import All, AnyOf, Comparison, Not, Params, evaluate, parse_rule_set
from tests.risk.conftest import ADDR, SAT, Ctx, default_doc
from tests.statements import count_statements


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
        async with ctx.sessions() as s, s.begin():
            got = await read_features(s, ev, params, now, lock=True)
            kind = "user" if ev.owner_type == "user" else "merchant"
            values = _values(ev, params, now)
            if ev.senders:
                values["parties"] = sorted(
                    {ev.destination, ev.counterparty, *ev.senders} - {""}) or [""]
            else:
                values.update(party_a=ev.destination or ev.counterparty,
                              party_b=ev.counterparty or ev.destination)
            query = _query("postgresql", kind, many_parties=bool(ev.senders))
            want = dict((await s.execute(query, values)).mappings().one())
        assert list(got) == list(want)
        for key in want:
            # Labels are aggregated in no particular order; everything else exactly.
            same = (sorted(got[key].split(",")) == sorted(want[key].split(","))
                    if key == "labels" and want[key] else got[key] == want[key])
            assert same, (ev, key, got[key], want[key])
        assert got["wallet"] == ctx.wallet.id and got["live_version"] is not None
        rows.append(got)
    # The history reached every part of the row (not a comparison of zeros).
    assert [bool(r["sanctioned"]) for r in rows] == [False, True, False, True, False]
    first = rows[0]
    assert first["out.count.1h"] == 2 and first["out.count.30d"] == 5
    assert first["out.counterparties.30d"] == 3 and first["out.band"] == 2
    assert first["in.count.1h"] == 1 and first["in.rapid"] > 0 and first["seen"] == 4
    assert first["label_score"] == 25 and first["first_seen"] is not None


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
