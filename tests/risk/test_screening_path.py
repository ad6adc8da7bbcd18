"""The screening's fast path (issue 12's ≤ 2 ms): rules compiled to closures must decide
exactly as the rule trees say, and the feature statement, bound with the last live set's
parameters, must read again when the live set's parameters changed."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from satvault.risk.rules import All, AnyOf, Comparison, Not, evaluate, parse_rule_set
from tests.risk.conftest import SAT, Ctx, default_doc
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
    features = [s for s in n.sql if '"out.count.1h"' in s]
    assert len(features) == 2, str(n)  # bound with the old parameters, then read again
    with count_statements(engine) as n:
        again = await ctx.screen(ctx.event(1_000 * SAT))
    assert again.features == after.features
    assert sum('"out.count.1h"' in s for s in n.sql) == 1, str(n)  # the new ones now
