"""The withdrawal policy as values: ordered rules, and the decision for one withdrawal.

A policy is a list of rules tried in order; the first rule whose every condition holds
decides, and a withdrawal no rule matches is allowed (an empty policy changes nothing).
A rule, as JSON::

    {"name": "large on-chain", "action": "require_approval", "approvals": 2,
     "group": "treasury",
     "rails": ["onchain"], "asset": "BTC", "account_groups": ["merchant"],
     "min_amount_msat": 100000000, "max_amount_msat": null,
     "window_hours": 24, "window_min_sum_msat": 500000000,
     "destination": "not_allowlisted"}

Conditions (all optional; all present ones must hold):

* ``rails``: ``onchain``, ``lightning`` (paid by our node) or ``internal`` (one of our own
  invoices, settled in the ledger);
* ``asset``; ``account_groups``: the paying wallet's owner type (``user``, ``merchant``);
  ``wallets``: wallet ids;
* ``min_amount_msat`` / ``max_amount_msat``: this withdrawal's amount, per transaction;
* ``window_hours`` with ``window_min_sum_msat``: the wallet's withdrawals in the last
  ``window_hours`` (failed and cancelled ones excepted, this one included) add up to at
  least that much;
* ``destination``: ``allowlisted`` / ``not_allowlisted`` — the destination is (not) an
  entry of the wallet's allow-list whose cool-down has passed.

Actions: ``allow``, ``block``, or ``require_approval`` with ``approvals`` (N) from ``group``
(whose members are the M). Pure: no session, no clock; the facts that need the database
(window sums, the allow-list) are asked for by :func:`needs` and passed in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from satvault.withdrawals.policy.errors import InvalidPolicy

__all__ = ["Action", "Decision", "Facts", "Needs", "Policy", "Rule", "decide", "decide_known",
           "needs", "parse_policy"]

RAILS = frozenset({"onchain", "lightning", "internal"})
_DESTINATION = frozenset({"allowlisted", "not_allowlisted"})


class Action(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    REQUIRE_APPROVAL = "require_approval"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    action: Action
    approvals: int = 0
    group: str | None = None
    rails: tuple[str, ...] | None = None
    asset: str | None = None
    account_groups: tuple[str, ...] | None = None
    wallets: tuple[str, ...] | None = None
    min_amount_msat: int | None = None
    max_amount_msat: int | None = None
    window_hours: int | None = None
    window_min_sum_msat: int | None = None
    destination: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v is not None and not (k == "approvals" and v == 0)}


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...] = ()

    def canonical(self) -> str:
        return json.dumps({"rules": [r.as_json() for r in self.rules]}, sort_keys=True)


@dataclass(frozen=True, slots=True)
class Needs:
    """What :func:`decide` will look at beyond the withdrawal itself."""

    window_hours: frozenset[int] = frozenset()
    allowlist: bool = False


@dataclass(frozen=True, slots=True)
class Facts:
    amount_msat: int
    rail: str
    asset: str
    account_group: str
    wallet_id: str
    window_sums: dict[int, int] = field(default_factory=dict)  # hours -> msat
    allowlisted: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    rule: str | None = None  # None: no rule matched (allowed)
    approvals: int = 0
    group: str | None = None

    @property
    def reason(self) -> str:
        return "no rule matched" if self.rule is None else f"rule {self.rule!r}"


# Bounds that keep every value usable where it is used: an amount no wallet can exceed (21
# million BTC in msat), a window whose start a date can still hold (ten years), approvals and a
# group name the approval request's columns hold. Found from outside: a window of 10^8 hours
# made every withdrawal fail computing its start, and the database refused (a 500) every
# withdrawal held for 2^31 approvals or for a group named in more than 60 characters.
MAX_MSAT = 21_000_000 * 100_000_000_000
MAX_WINDOW_HOURS = 10 * 366 * 24
MAX_APPROVALS = 100
MAX_GROUP = 60


def _int(raw: dict[str, Any], key: str, minimum: int, maximum: int = MAX_MSAT) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) \
            or not minimum <= value <= maximum:
        raise InvalidPolicy(f"{key} must be an integer from {minimum} to {maximum}")
    return value


def _strings(raw: dict[str, Any], key: str, allowed: frozenset[str] | None = None
             ) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidPolicy(f"{key} must be a non-empty list of strings")
    if allowed is not None and not set(value) <= allowed:
        raise InvalidPolicy(f"{key} may hold only {', '.join(sorted(allowed))}")
    return tuple(value)


_KEYS = frozenset(Rule.__dataclass_fields__)


def _rule(raw: Any, index: int) -> Rule:
    if not isinstance(raw, dict):
        raise InvalidPolicy(f"rule {index} must be an object")
    unknown = set(raw) - _KEYS
    if unknown:
        raise InvalidPolicy(f"rule {index}: unknown keys {', '.join(sorted(unknown))}")
    name = raw.get("name", f"rule {index}")
    if not isinstance(name, str) or not 0 < len(name) <= 80:
        raise InvalidPolicy(f"rule {index}: name must be a string of 1 to 80 characters")
    try:
        action = Action(str(raw.get("action")))
    except ValueError:
        raise InvalidPolicy(f"rule {name!r}: action must be allow, block or "
                            "require_approval") from None
    approvals = _int(raw, "approvals", 1, MAX_APPROVALS) or 0
    group = raw.get("group")
    if action is Action.REQUIRE_APPROVAL:
        if not approvals or not isinstance(group, str) or not 0 < len(group) <= MAX_GROUP:
            raise InvalidPolicy(f"rule {name!r}: require_approval needs approvals ≥ 1 and a "
                                f"group (a name of at most {MAX_GROUP} characters)")
    elif approvals or group is not None:
        raise InvalidPolicy(f"rule {name!r}: approvals and group go with require_approval")
    window = _int(raw, "window_hours", 1, MAX_WINDOW_HOURS)
    window_sum = _int(raw, "window_min_sum_msat", 1)
    if (window is None) != (window_sum is None):
        raise InvalidPolicy(f"rule {name!r}: window_hours and window_min_sum_msat go "
                            "together")
    destination = raw.get("destination")
    if destination is not None and destination not in _DESTINATION:
        raise InvalidPolicy(f"rule {name!r}: destination must be allowlisted or "
                            "not_allowlisted")
    asset = raw.get("asset")
    if asset is not None and not isinstance(asset, str):
        raise InvalidPolicy(f"rule {name!r}: asset must be a string")
    return Rule(name=name, action=action, approvals=approvals, group=group,
                rails=_strings(raw, "rails", RAILS), asset=asset,
                account_groups=_strings(raw, "account_groups"),
                wallets=_strings(raw, "wallets"),
                min_amount_msat=_int(raw, "min_amount_msat", 0),
                max_amount_msat=_int(raw, "max_amount_msat", 0),
                window_hours=window, window_min_sum_msat=window_sum, destination=destination)


def parse_policy(raw: Any) -> Policy:
    """A policy from its JSON shape (``{"rules": [...]}``), or :class:`InvalidPolicy` naming
    the first problem."""
    if not isinstance(raw, dict) or set(raw) != {"rules"} or not isinstance(raw["rules"], list):
        raise InvalidPolicy('a policy is an object {"rules": [ ... ]}')
    rules = tuple(_rule(r, i) for i, r in enumerate(raw["rules"], start=1))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise InvalidPolicy("rule names must be unique")
    return Policy(rules)


def needs(policy: Policy) -> Needs:
    return Needs(frozenset(r.window_hours for r in policy.rules if r.window_hours),
                 any(r.destination for r in policy.rules))


def _matches(rule: Rule, f: Facts) -> bool:
    if rule.rails is not None and f.rail not in rule.rails:
        return False
    if rule.asset is not None and f.asset != rule.asset:
        return False
    if rule.account_groups is not None and f.account_group not in rule.account_groups:
        return False
    if rule.wallets is not None and f.wallet_id not in rule.wallets:
        return False
    if rule.min_amount_msat is not None and f.amount_msat < rule.min_amount_msat:
        return False
    if rule.max_amount_msat is not None and f.amount_msat > rule.max_amount_msat:
        return False
    if rule.window_hours is not None and rule.window_min_sum_msat is not None \
            and f.window_sums.get(rule.window_hours, 0) < rule.window_min_sum_msat:
        return False
    if rule.destination == "allowlisted" and not f.allowlisted:
        return False
    return not (rule.destination == "not_allowlisted" and f.allowlisted)


def decide(policy: Policy, facts: Facts) -> Decision:
    """The first matching rule's action; allow when none matches."""
    for rule in policy.rules:
        if _matches(rule, facts):
            return Decision(rule.action, rule.name, rule.approvals, rule.group)
    return Decision(Action.ALLOW)


def decide_known(policy: Policy, facts: Facts) -> Decision | None:
    """:func:`decide` without the facts that need reading (``facts``' window sums and
    allow-list are not known): the same decision when every rule up to the one that decides
    is on the withdrawal alone, or cannot match whatever those facts are; None as soon as a
    rule that could match depends on them."""
    for rule in policy.rules:
        alone = replace(rule, window_hours=None, window_min_sum_msat=None, destination=None)
        if not _matches(alone, facts):
            continue  # no window sum or allow-list could make it match
        if (rule.window_hours is not None and rule.window_min_sum_msat is not None) \
                or rule.destination is not None:
            return None  # it might match: only the facts read under the lock tell
        return Decision(rule.action, rule.name, rule.approvals, rule.group)
    return Decision(Action.ALLOW)
