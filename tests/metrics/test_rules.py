"""The shipped Prometheus rules (deploy/prometheus/alerts.yml): the file parses, and every
kind of review item the platform opens is read by some rule, so an open item of any kind
alerts someone (a kind left out, or one added without a rule, fails here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from satvault.onchain.models import ReviewKind

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
_SELECTOR = re.compile(r"satvault_review_items_open\s*(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _selects(matchers: str, kind: str) -> bool:
    """Whether a selector's label matchers (PromQL: ``=``, ``!=``, ``=~``, ``!~``; regexes
    anchored) take the series of ``kind``."""
    for label, op, value in _MATCHER.findall(matchers):
        if label != "kind":
            continue
        hit = {"=": kind == value, "!=": kind != value,
               "=~": re.fullmatch(value, kind) is not None,
               "!~": re.fullmatch(value, kind) is None}[op]
        if not hit:
            return False
    return True


def test_the_rules_file_parses_and_every_review_kind_alerts():
    rules = yaml.safe_load(RULES.read_text())
    alerting = [rule for group in rules["groups"] for rule in group["rules"]]
    assert all({"alert", "expr", "labels"} <= set(rule) for rule in alerting)
    assert all(rule["labels"]["severity"] in ("critical", "warning") for rule in alerting)
    names = [rule["alert"] for rule in alerting]
    assert len(names) == len(set(names))
    by_kind: dict[str, list[str]] = {}
    for rule in alerting:
        for matchers in _SELECTOR.findall(rule["expr"]):
            for kind in ReviewKind:
                if _selects(matchers, kind.value):
                    by_kind.setdefault(kind.value, []).append(rule["alert"])
    missing = [k.value for k in ReviewKind if k.value not in by_kind]
    assert not missing, f"no rule alerts on an open review item of kind {missing}"
    # one rule each: an item is not announced twice
    assert all(len(alerts) == 1 for alerts in by_kind.values()), by_kind
    # money lost, or possibly lost: critical
    severity = {rule["alert"]: rule["labels"]["severity"] for rule in alerting}
    for kind in ("deposit_reversal_unfunded", "payout_stuck", "payout_reorged_conflict",
                 "signer_limit"):
        assert severity[by_kind[kind][0]] == "critical", kind


def test_the_matcher_reads_promql_selectors_as_prometheus_does():
    assert _selects('kind="a"', "a") and not _selects('kind="a"', "b")
    assert _selects('kind!~"a|b"', "c") and not _selects('kind!~"a|b"', "b")
    assert not _selects('kind=~"pay"', "payout_stuck")  # anchored
    assert _selects("", "anything")
