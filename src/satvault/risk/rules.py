"""Rules as data, and their evaluation: pure (no session, clock or settings).

A rule set is JSON: score thresholds, a few parameters the feature query needs (the
structuring band, the rapid-movement window, the z-score's minimum history) and a list of
rules. A rule is a condition tree — ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": c}`` or
a comparison ``{"field": f, "op": op, "value": v}`` (or ``"ref": other_field`` instead of a
value) — and a score: a number, or ``score_field`` to take it from a feature (the operator's
label lists carry their own scores). Each matching rule adds its score; the total against the
thresholds gives approve / review / reject. A sanctioned address is a reject whatever the score.

The fields a rule may name are a closed set (:data:`FIELDS`): the event's own (amount, asset,
direction, rail, destination, counterparty, account, KYC tier) and the features computed for
it in one query (:mod:`satvault.risk.features`): windowed aggregates over 1h/24h/7d/30d
(``agg.<in|out>.<count|sum|mean|stddev|counterparties>.<window>``, history before this event),
``velocity.<count|sum>.<window>`` (the same direction's history plus this event), each of
them and ``structuring_count`` again as ``person.<field>``, counted over every wallet of the
person behind the account (the user's own and those of the merchants the user owns, as the
withdrawal limits count them: a merchant's wallet, its owner's), with ``person.wallets``
saying how many there are; the derived ones named in :data:`FIELDS`; and ``plugin.<name>``
for each installed ``risk_features`` plug-in (:mod:`satvault.risk.plugins`). A rule naming
anything else is refused when it is proposed, not when it is evaluated.

Evaluation is a function of (rule set, features) only: the same features against the same rule
set always give the same decision, which is what lets a stored decision be explained and
re-checked later.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    model_validator,
)

from satvault.kernel import strictjson
from satvault.kernel.errors import InvalidInput
from satvault.kernel.plugins import PluginError, load_plugin, plugin_names

__all__ = ["FIELDS", "PERSON_PREFIX", "PLUGIN_PREFIX", "WINDOWS", "Comparison", "Condition",
           "Outcome", "Rule", "RuleResult", "RuleSetDoc", "Verdict", "evaluate", "field_kind",
           "parse_rule_set"]

WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
_METRICS = ("count", "sum", "mean", "stddev", "counterparties")

_NUM = "number"
_STR = "string"
_BOOL = "bool"
_LIST = "list"

FIELDS: dict[str, str] = {
    "amount_msat": _NUM, "asset": _STR, "direction": _STR, "rail": _STR,
    "payout_rail": _STR,  # the rail the money moves by: a refund's onchain/lightning/internal
    "destination": _STR, "counterparty": _STR, "account": _STR, "kyc_tier": _NUM,
    # derived in the feature query
    "amount_zscore": _NUM,            # vs the account's own 30-day history, same direction
    "history_count": _NUM,            # that history's size (the z-score is 0 below the minimum)
    "destination_sanctioned": _BOOL,  # destination or counterparty on the sanctions list
    "destination_labels": _LIST,      # operator labels of destination or counterparty
    "destination_label_score": _NUM,  # the sum of those labels' scores
    "destination_age_days": _NUM,     # first seen, per the loaded index; unknown counts as 0
    "destination_age_known": _BOOL,
    "destination_seen_count": _NUM,   # earlier withdrawals of this account to it
    "structuring_count": _NUM,        # txs (this one included) in the band under the threshold
    "rapid_in_msat": _NUM,            # money in within the rapid-movement window
    "rapid_ratio_bp": _NUM,           # min(amount, rapid_in) / amount, in basis points
}
for _d in ("in", "out"):
    for _m in _METRICS:
        for _w in WINDOWS:
            FIELDS[f"agg.{_d}.{_m}.{_w}"] = _NUM
for _m in ("count", "sum"):
    for _w in WINDOWS:
        FIELDS[f"velocity.{_m}.{_w}"] = _NUM
# The same windows over every wallet of the person behind the account (migration 0067): a
# user's own and those of the merchants the user owns, as the withdrawal limits count them.
PERSON_PREFIX = "person."
FIELDS.update({PERSON_PREFIX + name: _NUM for name in list(FIELDS)
               if name.startswith(("agg.", "velocity."))})
FIELDS[PERSON_PREFIX + "structuring_count"] = _NUM
FIELDS[PERSON_PREFIX + "wallets"] = _NUM  # how many wallets the person has (1: alone)

PLUGIN_PREFIX = "plugin."
_KINDS = (_NUM, _STR, _BOOL, _LIST)


def field_kind(name: str) -> str | None:
    """A field's type: a built-in one's, or an installed plug-in feature's declared kind."""
    kind = FIELDS.get(name)
    if kind is not None or not name.startswith(PLUGIN_PREFIX):
        return kind
    plugin = name.removeprefix(PLUGIN_PREFIX)
    if plugin not in plugin_names("risk_features"):
        return None
    try:
        kind = getattr(load_plugin("risk_features", plugin), "kind", None)
    except PluginError as exc:
        raise ValueError(str(exc)) from None
    if kind not in _KINDS:
        raise ValueError(f"the risk feature plug-in {plugin!r} declares kind {kind!r}; "
                         f"use one of {', '.join(_KINDS)}")
    return str(kind)


def _fields_of(cond: Any, out: set[str]) -> None:
    if isinstance(cond, Comparison):
        out.add(cond.field)
        if cond.ref is not None:
            out.add(cond.ref)
    elif isinstance(cond, All | AnyOf):
        for c in cond.all if isinstance(cond, All) else cond.any:
            _fields_of(c, out)
    elif isinstance(cond, Not):
        _fields_of(cond.not_, out)


_ORDERED = {"lt", "lte", "gt", "gte"}
_OPS = _ORDERED | {"eq", "ne", "in", "not_in", "contains"}


class Outcome(StrEnum):
    APPROVE = "approve"
    REVIEW = "review"
    REJECT = "reject"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Comparison(_Strict):
    field: str
    op: Literal["eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "contains"]
    value: Any = None
    ref: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Comparison:
        kind = field_kind(self.field)
        if kind is None:
            raise ValueError(f"unknown field {self.field!r}")
        if self.ref is not None:
            if "value" in self.model_fields_set:
                raise ValueError("give either value or ref, not both")
            ref_kind = field_kind(self.ref)
            if ref_kind is None:
                raise ValueError(f"unknown field {self.ref!r} in ref")
            if self.op not in _ORDERED | {"eq", "ne"} or ref_kind != kind:
                raise ValueError(f"{self.field} {self.op} {self.ref}: not comparable")
            return self
        if "value" not in self.model_fields_set:
            raise ValueError("a comparison needs a value (or a ref)")
        v = self.value
        if self.op in _ORDERED and (kind != _NUM or not _is_number(v)):
            raise ValueError(f"{self.op} needs a numeric field and a number, got "
                             f"{self.field} ({kind}) and {v!r}")
        if self.op in {"in", "not_in"} and (
                not isinstance(v, list) or not all(_scalar_of(kind, x) for x in v)):
            raise ValueError(f"{self.op} needs a list of {kind} values")
        if self.op == "contains" and (kind != _LIST or not isinstance(v, str)):
            raise ValueError("contains needs a list field and a string value")
        if self.op in {"eq", "ne"} and not _scalar_of(kind, v):
            raise ValueError(f"{self.field} is a {kind}; {v!r} is not")
        return self


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _scalar_of(kind: str, v: Any) -> bool:
    if kind == _NUM:
        return _is_number(v)
    if kind == _STR:
        return isinstance(v, str)
    if kind == _BOOL:
        return isinstance(v, bool)
    return False


class All(_Strict):
    all: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    any: list[Condition] = Field(min_length=1)


class Not(_Strict):
    not_: Condition = Field(alias="not")


def _node_kind(v: Any) -> str:
    """Which node a condition is, by its key, so an error names the right one."""
    if isinstance(v, dict):
        for key in ("all", "any", "not"):
            if key in v:
                return key
        return "compare"
    kinds: dict[type, str] = {All: "all", AnyOf: "any", Not: "not"}
    return kinds.get(type(v), "compare")


Condition = Annotated[
    Annotated[Comparison, Tag("compare")] | Annotated[All, Tag("all")]
    | Annotated[AnyOf, Tag("any")] | Annotated[Not, Tag("not")],
    Discriminator(_node_kind)]
All.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


class Rule(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    description: str = ""
    when: Condition
    score: int = Field(default=0, ge=-1000, le=1000)
    score_field: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if self.score_field is not None and field_kind(self.score_field) != _NUM:
            raise ValueError(f"score_field {self.score_field!r} is not a numeric field")
        return self


class Thresholds(_Strict):
    review: int = Field(ge=1)
    reject: int = Field(ge=1)

    @model_validator(mode="after")
    def _check(self) -> Thresholds:
        if self.reject <= self.review:
            raise ValueError("the reject threshold must be above the review threshold")
        return self


class Params(_Strict):
    """What the feature query needs from the rule set (so a rule set change can move them)."""

    zscore_min_history: int = Field(default=5, ge=2, le=10_000)
    # At most what the amount columns' integers hold (2^63 - 1 on SQLite): the feature
    # statement binds it beside them (found from outside: a larger one made every screening,
    # so every withdrawal, fail). Above 21 million BTC it already means "no amount is near".
    structuring_threshold_msat: int = Field(default=1_000_000_000, gt=0,  # 0.01 BTC
                                            le=2**63 - 1)
    structuring_band_bp: int = Field(default=1000, gt=0, le=10_000)  # 10 % under it
    structuring_days: int = Field(default=7, ge=1, le=30)
    rapid_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)


class RuleSetDoc(_Strict):
    thresholds: Thresholds
    params: Params = Params()
    rules: list[Rule] = Field(max_length=500)
    _plugin_fields: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _unique(self) -> RuleSetDoc:
        ids = [r.id for r in self.rules]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate rule ids: {sorted(dup)}")
        names: set[str] = set()
        for rule in self.rules:
            _fields_of(rule.when, names)
            if rule.score_field is not None:
                names.add(rule.score_field)
        self._plugin_fields = tuple(sorted(n for n in names if n.startswith(PLUGIN_PREFIX)))
        return self

    @property
    def plugin_fields(self) -> tuple[str, ...]:
        """The ``plugin.*`` fields its rules read (computed for each screening)."""
        return self._plugin_fields


def parse_rule_set(doc: str | Mapping[str, Any]) -> RuleSetDoc:
    """Validate a rule set strictly; an :class:`InvalidInput` naming each problem otherwise."""
    try:
        data = strictjson.loads(doc) if isinstance(doc, str) else dict(doc)
    except ValueError as exc:  # NaN and Infinity too: not JSON (RFC 8259)
        raise InvalidInput(f"the rule set is not JSON: {exc}") from exc
    try:
        return RuleSetDoc.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in exc.errors(include_url=False))
        raise InvalidInput(f"invalid rule set: {problems}") from None


@dataclass(frozen=True, slots=True)
class RuleResult:
    id: str
    matched: bool
    score: int  # what it added (0 when it did not match)
    inputs: dict[str, Any]  # the fields its condition read, with their values

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "matched": self.matched, "score": self.score,
                "inputs": self.inputs}


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    score: int
    sanctioned: bool
    results: tuple[RuleResult, ...]


# Evaluation: each rule's condition tree is compiled once per rule set into nested closures
# (the field names, operator and constant bound in), so a screening calls 20 small functions
# instead of walking 20 pydantic trees with isinstance checks and string compares.
_Test = Callable[[Mapping[str, Any], dict[str, Any]], bool]


def _none_false(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def ordered(left: Any, right: Any) -> bool:
        return left is not None and right is not None and bool(op(left, right))
    return ordered


_BINARY: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b),
    "ne": lambda a, b: bool(a != b),
    "in": lambda a, b: a in (b or ()),
    "not_in": lambda a, b: a not in (b or ()),
    "contains": lambda a, b: isinstance(a, list | tuple) and b in a,
    "lt": _none_false(operator.lt),
    "lte": _none_false(operator.le),
    "gt": _none_false(operator.gt),
    "gte": _none_false(operator.ge),
}


def _compile(cond: Comparison | All | AnyOf | Not) -> _Test:
    # Every branch is read (no short cut), so the explanation lists every input.
    if isinstance(cond, Comparison):
        test, field, ref, value = _BINARY[cond.op], cond.field, cond.ref, cond.value
        if ref is None:
            def compare(features: Mapping[str, Any], seen: dict[str, Any]) -> bool:
                left = seen[field] = features.get(field)
                return test(left, value)
        else:
            def compare(features: Mapping[str, Any], seen: dict[str, Any]) -> bool:
                left = seen[field] = features.get(field)
                right = seen[ref] = features.get(ref)
                return test(left, right)
        return compare
    if isinstance(cond, All):
        parts = tuple(_compile(c) for c in cond.all)
        return lambda f, seen: all([p(f, seen) for p in parts])
    if isinstance(cond, AnyOf):
        parts = tuple(_compile(c) for c in cond.any)
        return lambda f, seen: any([p(f, seen) for p in parts])
    inner = _compile(cond.not_)
    return lambda f, seen: not inner(f, seen)


_COMPILED: dict[int, tuple[RuleSetDoc, tuple[tuple[str, _Test, int, str | None], ...]]] = {}


def _compiled(rule_set: RuleSetDoc) -> tuple[tuple[str, _Test, int, str | None], ...]:
    """The rule set's closures, built on first use (cached by identity: parsed rule sets
    are cached by version, so a few live at a time)."""
    hit = _COMPILED.get(id(rule_set))
    if hit is not None and hit[0] is rule_set:
        return hit[1]
    if len(_COMPILED) > 64:
        _COMPILED.clear()
    rules = tuple((r.id, _compile(r.when), r.score, r.score_field) for r in rule_set.rules)
    _COMPILED[id(rule_set)] = (rule_set, rules)
    return rules


def evaluate(rule_set: RuleSetDoc, features: Mapping[str, Any]) -> Verdict:
    """Each rule against ``features``; the total score against the thresholds."""
    results = []
    total = 0
    for rule_id, test, fixed, score_field in _compiled(rule_set):
        seen: dict[str, Any] = {}
        score = 0
        matched = test(features, seen)
        if matched:
            if score_field is not None:
                raw = features.get(score_field) or 0
                seen[score_field] = raw
                score = int(raw)
            else:
                score = fixed
        total += score
        results.append(RuleResult(rule_id, matched, score, seen))
    sanctioned = bool(features.get("destination_sanctioned"))
    if sanctioned or total >= rule_set.thresholds.reject:
        outcome = Outcome.REJECT
    elif total >= rule_set.thresholds.review or features.get("plugin_errors"):
        # a plug-in feature that failed cannot approve: a person looks at it
        outcome = Outcome.REVIEW
    else:
        outcome = Outcome.APPROVE
    return Verdict(outcome, total, sanctioned, tuple(results))
