"""The pure core: parsing a policy (clear refusals), first-match decisions, what it needs."""

from __future__ import annotations

import pytest

from satvault.withdrawals.policy.core import Action, Facts, decide, needs, parse_policy
from satvault.withdrawals.policy.errors import InvalidPolicy

POLICY = {"rules": [
    {"name": "no internal giants", "action": "block", "rails": ["internal"],
     "min_amount_msat": 10_000_000},
    {"name": "big", "action": "require_approval", "approvals": 2, "group": "treasury",
     "min_amount_msat": 1_000_000},
    {"name": "busy day", "action": "require_approval", "approvals": 1, "group": "ops",
     "window_hours": 24, "window_min_sum_msat": 5_000_000},
    {"name": "unknown merchant destination", "action": "block",
     "account_groups": ["merchant"], "destination": "not_allowlisted"},
]}


def facts(amount: int, rail: str = "onchain", group: str = "user", window: int = 0,
          allowlisted: bool = False) -> Facts:
    return Facts(amount_msat=amount, rail=rail, asset="BTC", account_group=group,
                 wallet_id="wal_1", window_sums={24: window}, allowlisted=allowlisted)


def test_first_matching_rule_decides_and_no_match_allows():
    p = parse_policy(POLICY)
    assert decide(p, facts(20_000_000, rail="internal")).action is Action.BLOCK
    d = decide(p, facts(20_000_000))
    assert (d.action, d.rule, d.approvals, d.group) == (Action.REQUIRE_APPROVAL, "big", 2,
                                                        "treasury")
    assert decide(p, facts(500_000, window=6_000_000)).rule == "busy day"
    assert decide(p, facts(500_000, window=4_000_000)).action is Action.ALLOW
    assert decide(p, facts(500_000, group="merchant")).action is Action.BLOCK
    assert decide(p, facts(500_000, group="merchant", allowlisted=True)).action is Action.ALLOW
    assert decide(parse_policy({"rules": []}), facts(10**12)).action is Action.ALLOW


def test_needs_only_what_the_rules_read():
    assert needs(parse_policy(POLICY)).window_hours == {24}
    assert needs(parse_policy(POLICY)).allowlist
    simple = needs(parse_policy({"rules": [{"name": "x", "action": "block"}]}))
    assert simple.window_hours == frozenset() and not simple.allowlist


def test_canonical_form_round_trips():
    p = parse_policy(POLICY)
    import json
    assert parse_policy(json.loads(p.canonical())) == p


@pytest.mark.parametrize("raw, message", [
    ([], "a policy is an object"),
    ({"rules": [{"action": "maybe"}]}, "action must be"),
    ({"rules": [{"action": "require_approval", "approvals": 2}]}, "needs approvals"),
    ({"rules": [{"action": "allow", "group": "x"}]}, "go with require_approval"),
    ({"rules": [{"action": "block", "window_hours": 24}]}, "go together"),
    ({"rules": [{"action": "block", "rails": ["carrier pigeon"]}]}, "rails may hold"),
    ({"rules": [{"action": "block", "min_amount_msat": -1}]}, "min_amount_msat"),
    ({"rules": [{"action": "block", "colour": "red"}]}, "unknown keys colour"),
    ({"rules": [{"action": "block", "destination": "somewhere"}]}, "destination must"),
    ({"rules": [{"name": "a", "action": "block"}, {"name": "a", "action": "allow"}]},
     "unique"),
])
def test_malformed_policies_are_refused_with_the_reason(raw, message):
    with pytest.raises(InvalidPolicy, match=message):
        parse_policy(raw)
