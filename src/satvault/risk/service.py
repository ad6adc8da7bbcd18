"""Screening a payment, storing and explaining the decision, and changing the rules.

:func:`screen` runs inside the payment's unit of work, before any hold is placed:

1. the wallet row is locked (PostgreSQL; SQLite serialises writers already) — concurrent
   payments of one wallet are screened one after the other, each seeing the ones before it —
   and, for a payment out, the person behind it (migration 0067: the advisory lock the
   limits take too), so payments out of two wallets of one person are screened in turn;
2. every feature is computed (:mod:`satvault.risk.features`) and the live rule-set version
   read (bound with the last live set's parameters; read again in the rare case the live
   set's differ). On PostgreSQL 1 and 2 are one round trip: a server-side function (migration
   0031) takes the lock, then runs the feature query as a statement of its own, whose
   snapshot is taken after the lock was granted; on SQLite 2 is the one statement;
3. the rules are evaluated (pure, :mod:`satvault.risk.rules`, the parsed set cached by version).

The caller then writes the decision (:func:`record`) with the payment's id once the payment
exists (approve, review), or raises :class:`RiskRejected`, whose ``record_after_rollback``
writes the decision and its case in the transaction that records the refusal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.db import insert_ignoring, one_at_a_time, utcnow
from satvault.kernel.errors import NotFound
from satvault.kernel.ids import new_id
from satvault.logs import get_logger
from satvault.payouts.service import BoundInsert
from satvault.risk.audit import audit
from satvault.risk.errors import RiskRejected, RuleSetRefused
from satvault.risk.features import Event, derive, read_features
from satvault.risk.lists import refresh_sanctions, shipped_sanctions
from satvault.risk.models import (
    CaseStatus,
    RiskAddressLabel,
    RiskCase,
    RiskDecision,
    RiskRuleSet,
    RuleSetStatus,
)
from satvault.risk.plugins import add_plugin_features
from satvault.risk.rules import (
    Outcome,
    Params,
    RuleSetDoc,
    Verdict,
    evaluate,
    parse_rule_set,
)

__all__ = ["BUILT_IN_AUTHOR", "Screening", "approve_rule_set", "decision_insert",
           "default_rule_set_json", "explain", "live_rule_set", "propose_rule_set", "record",
           "reevaluate", "reject_error", "reject_rule_set", "screen"]

log = get_logger(__name__)

BUILT_IN_AUTHOR = "satvault:built-in"
_parsed: dict[tuple[int, datetime | None], RuleSetDoc] = {}
_last_live: list[RuleSetDoc | None] = [None]  # the rule set the last screening found live

_APPROVALS_KEY = 0x5A7A_0061  # satvault.db.one_at_a_time: approvals of rule sets


def default_rule_set_json() -> str:
    return resources.files("satvault.risk").joinpath("data/default_rules.json").read_text()


@dataclass(frozen=True, slots=True)
class Screening:
    """One evaluation, not yet stored."""

    decision_id: str
    at: datetime
    event: Event
    version: int
    features: dict[str, Any]
    verdict: Verdict
    bootstrapped: bool = False  # this screening made the shipped default live

    @property
    def outcome(self) -> Outcome:
        return self.verdict.outcome


async def _doc(session: AsyncSession, version: int,
               created_at: datetime | None = None) -> RuleSetDoc:
    """The parsed rule set. Cached by (version, creation time): a version's JSON never
    changes, and the time tells a restored or recreated database's version 1 from ours."""
    key = (version, created_at)
    doc = _parsed.get(key) if created_at is not None else None
    if doc is None:
        text, created = (await session.execute(select(RiskRuleSet.rules, RiskRuleSet.created_at)
                                               .where(RiskRuleSet.version == version))).one()
        doc = _parsed[(version, created)] = parse_rule_set(text)
    return doc


def _insert_ignoring_conflict(session: AsyncSession, values: dict[str, Any]) -> Any:
    # The partial unique index's predicate as a literal: PostgreSQL infers the arbiter index
    # from it, which a prepared statement's generic plan (its sixth run on a connection on)
    # cannot do from a bound parameter ("no unique or exclusion constraint matching the ON
    # CONFLICT specification").
    where = text(f"status = '{RuleSetStatus.LIVE.value}'")
    return insert_ignoring(session.get_bind().dialect.name, RiskRuleSet.__table__, "status",
                           where=where).values(**values)


async def _ensure_live(session: AsyncSession) -> int:
    """The live version; the shipped default becomes version 1 the first time none is."""
    now = utcnow()
    res = await session.execute(_insert_ignoring_conflict(session, {
        "status": RuleSetStatus.LIVE, "rules": default_rule_set_json(),
        "note": "the shipped default rule set", "created_by": BUILT_IN_AUTHOR,
        "created_at": now, "approved_by": "satvault:shipped", "approved_at": now}))
    if res.rowcount == 1:  # type: ignore[attr-defined]
        # The first rule set of this database: the shipped sanctions snapshot with it, unless
        # an operator loaded a list already.
        have = (await session.execute(select(RiskAddressLabel.id).where(
            RiskAddressLabel.label == "sanctioned").limit(1))).first()
        if have is None:
            await refresh_sanctions(session, text=shipped_sanctions(), actor=BUILT_IN_AUTHOR,
                                    source="ofac-sdn (shipped snapshot)")
    return int((await session.execute(select(RiskRuleSet.version).where(
        RiskRuleSet.status == RuleSetStatus.LIVE))).scalar_one())


async def live_rule_set(session: AsyncSession) -> tuple[int, RuleSetDoc]:
    version = (await session.execute(select(RiskRuleSet.version).where(
        RiskRuleSet.status == RuleSetStatus.LIVE))).scalar_one_or_none()
    if version is None:
        version = await _ensure_live(session)
    return int(version), await _doc(session, int(version))


async def screen(session: AsyncSession, event: Event, *, lock: bool = True) -> Screening:
    """Evaluate ``event`` against the live rules (see the module docstring). ``lock``: take
    the wallet's row lock first (PostgreSQL), then the person's, so this wallet's payments
    and deposits, and those of the person's other wallets, are screened in turn."""
    now = utcnow()
    # The feature statement needs a few of the rule set's parameters before it says which
    # set is live: bind the last live set's, and read again in the rare case they changed.
    guess = _last_live[0]
    params = guess.params if guess is not None else Params()
    raw = await read_features(session, event, params, now, lock=lock)
    if raw["wallet"] is None:
        raise NotFound(f"wallet {event.wallet_id!r} not found")
    boot = raw["live_version"] is None
    if boot:
        version = await _ensure_live(session)
        doc = await _doc(session, version)
    else:
        version = int(raw["live_version"])
        doc = await _doc(session, version, raw["live_created_at"])
    _last_live[0] = doc
    if doc.params != params:
        raw = await read_features(session, event, doc.params, now)
    features = derive(event, doc.params, now, raw)
    add_plugin_features(doc, event, features)
    verdict = evaluate(doc, features)
    return Screening(new_id("rd"), now, event, version, features, verdict, boot)


def _decision_values(s: Screening, subject_type: str, subject_id: str | None
                     ) -> dict[str, Any]:
    return {"id": s.decision_id, "at": s.at, "wallet_id": s.event.wallet_id,
            "subject_type": subject_type, "subject_id": subject_id,
            "rule_set_version": s.version, "outcome": s.outcome,
            "score": s.verdict.score, "sanctioned": s.verdict.sanctioned,
            "amount_msat": s.event.amount_msat,
            "features": json.dumps(s.features, sort_keys=True),
            "results": json.dumps([r.as_dict() for r in s.verdict.results], sort_keys=True)}


def _reason(s: Screening) -> str:
    if s.verdict.sanctioned:
        return "sanctioned address"
    hit = [r.id for r in s.verdict.results if r.matched and r.score]
    return (f"{s.outcome.value}: score {s.verdict.score} ({', '.join(hit)})")[:200]


_DECISION_COLUMNS = ("id", "at", "wallet_id", "subject_type", "subject_id", "rule_set_version",
                     "outcome", "score", "sanctioned", "amount_msat", "features", "results")
# The decision's INSERT, built once with bound parameters (``d_<column>``): it is a part of
# every screened payment's guarded INSERT, which is built once only if this is too.
_DECISION_INSERT = insert(RiskDecision).values(**{
    name: bindparam(f"d_{name}", type_=RiskDecision.__table__.c[name].type)
    for name in _DECISION_COLUMNS})


def decision_insert(s: Screening, *, subject_type: str, subject_id: str | None) -> BoundInsert:
    """The decision's INSERT, not executed: an approved payment's caller may send it with
    its own write (:func:`satvault.payouts.service.insert_within_daily_limit`'s ``also``).
    A review or reject also needs its case: :func:`record`."""
    values = _decision_values(s, subject_type, subject_id)
    return BoundInsert(_DECISION_INSERT, {f"d_{name}": values[name] for name in _DECISION_COLUMNS})


async def record(session: AsyncSession, s: Screening, *, subject_type: str,
                 subject_id: str | None) -> str | None:
    """Store the decision (one INSERT) and, for a review or reject, open its case (one
    more). The case id, if one was opened."""
    decision = decision_insert(s, subject_type=subject_type, subject_id=subject_id)
    await session.execute(decision.statement, dict(decision.params))
    if s.outcome == Outcome.APPROVE:
        return None
    case_id = new_id("case")
    await session.execute(insert(RiskCase).values(
        id=case_id, decision_id=s.decision_id, wallet_id=s.event.wallet_id,
        status=CaseStatus.PENDING, reason=_reason(s), created_at=s.at, updated_at=s.at))
    log.info("risk_case_opened", case=case_id, decision=s.decision_id, outcome=s.outcome.value,
             score=s.verdict.score, sanctioned=s.verdict.sanctioned)
    return case_id


def reject_error(s: Screening, *, subject_type: str) -> RiskRejected:
    """The refusal for a rejected payment; it stores the decision and its case after the
    payment's transaction rolled back."""
    case_id = new_id("case")

    async def write(session: AsyncSession) -> None:
        values = _decision_values(s, subject_type, None)
        if s.bootstrapped:  # the default's first row went with the rollback: again
            values["rule_set_version"] = await _ensure_live(session)
        await session.execute(insert(RiskDecision).values(**values))
        await session.execute(insert(RiskCase).values(
            id=case_id, decision_id=s.decision_id, wallet_id=s.event.wallet_id,
            status=CaseStatus.PENDING, reason=_reason(s), created_at=s.at, updated_at=s.at))
        log.info("risk_rejected", case=case_id, decision=s.decision_id,
                 score=s.verdict.score, sanctioned=s.verdict.sanctioned)

    why = "a sanctioned address" if s.verdict.sanctioned else f"risk score {s.verdict.score}"
    return RiskRejected(f"refused by the risk rules ({why}); decision {s.decision_id}",
                        decision_id=s.decision_id, case_id=case_id, record=write)


# --- explaining and re-checking -------------------------------------------------------------

async def explain(session: AsyncSession, decision_id: str) -> dict[str, Any]:
    d = await session.get(RiskDecision, decision_id)
    if d is None:
        raise NotFound(f"risk decision {decision_id!r} not found")
    case = (await session.execute(select(RiskCase).where(
        RiskCase.decision_id == decision_id))).scalar_one_or_none()
    doc = await _doc(session, d.rule_set_version)
    return {
        "id": d.id, "at": d.at.isoformat(), "wallet_id": d.wallet_id,
        "subject": {"type": d.subject_type, "id": d.subject_id},
        "rule_set_version": d.rule_set_version, "outcome": d.outcome.value, "score": d.score,
        "sanctioned": d.sanctioned, "amount_msat": int(d.amount_msat),
        "thresholds": doc.thresholds.model_dump(),
        "rules": json.loads(d.results), "features": json.loads(d.features),
        "case": None if case is None else {"id": case.id, "status": case.status.value,
                                           "reason": case.reason},
    }


async def reevaluate(session: AsyncSession, decision_id: str) -> Verdict:
    """The stored decision's event and features against its own rule-set version again."""
    d = await session.get(RiskDecision, decision_id)
    if d is None:
        raise NotFound(f"risk decision {decision_id!r} not found")
    return evaluate(await _doc(session, d.rule_set_version), json.loads(d.features))


# --- changing the rules: a draft, then a second admin makes it live ------------------------

async def propose_rule_set(session: AsyncSession, *, rules: str | dict[str, Any], actor: str,
                           note: str = "") -> RiskRuleSet:
    doc = parse_rule_set(rules if isinstance(rules, str) else json.dumps(rules))
    text = json.dumps(doc.model_dump(mode="json", by_alias=True, exclude_none=True),
                      sort_keys=True)
    rs = RiskRuleSet(status=RuleSetStatus.DRAFT, rules=text, note=note[:500],
                     created_by=actor, created_at=utcnow(), approved_by=None, approved_at=None)
    session.add(rs)
    await session.flush()
    await audit(session, actor=actor, action="risk.rule_set.propose",
                subject=f"risk_rule_set:{rs.version}", after={"status": "draft",
                                                               "note": note})
    return rs


async def approve_rule_set(session: AsyncSession, *, version: int, actor: str) -> RiskRuleSet:
    """Make a draft live (the live one retires). Its author cannot: a second admin must.
    Approvals run one at a time, so two of different drafts at once make the later one
    live after the earlier (:func:`satvault.db.one_at_a_time`)."""
    await one_at_a_time(session, _APPROVALS_KEY)
    rs = await session.get(RiskRuleSet, version, with_for_update=True)
    if rs is None:
        raise NotFound(f"rule set version {version} not found")
    if rs.status != RuleSetStatus.DRAFT:
        raise RuleSetRefused(f"rule set {version} is {rs.status.value}, not a draft")
    if rs.created_by == actor:
        raise RuleSetRefused("a rule set is approved by an admin other than its author")
    old = (await session.execute(select(RiskRuleSet).where(
        RiskRuleSet.status == RuleSetStatus.LIVE).with_for_update())).scalar_one_or_none()
    if old is not None and old.version > version:
        # Found from outside: approving it made it live over the newer set, undoing a later
        # decision unseen.
        raise RuleSetRefused(f"rule set {version} was drafted before set {old.version}, "
                             "which is live now: draft it again to replace it")
    if old is not None:
        await session.execute(update(RiskRuleSet).where(RiskRuleSet.version == old.version)
                              .values(status=RuleSetStatus.RETIRED))
    now = utcnow()
    rs.status, rs.approved_by, rs.approved_at = RuleSetStatus.LIVE, actor, now
    await session.flush()
    await audit(session, actor=actor, action="risk.rule_set.approve",
                subject=f"risk_rule_set:{version}",
                before={"live": None if old is None else old.version},
                after={"live": version, "created_by": rs.created_by})
    return rs


async def reject_rule_set(session: AsyncSession, *, version: int, actor: str,
                          reason: str = "") -> RiskRuleSet:
    """Retire a draft without it ever going live. Like an approval, the decision is a second
    admin's: its author cannot (``approved_by`` then names who decided, as the table's
    four-eyes CHECK wants for every set that is no longer a draft)."""
    rs = await session.get(RiskRuleSet, version, with_for_update=True)
    if rs is None:
        raise NotFound(f"rule set version {version} not found")
    if rs.status != RuleSetStatus.DRAFT:
        raise RuleSetRefused(f"rule set {version} is {rs.status.value}, not a draft")
    if rs.created_by == actor:
        raise RuleSetRefused("a rule set is decided by an admin other than its author")
    rs.status, rs.approved_by, rs.approved_at = RuleSetStatus.RETIRED, actor, utcnow()
    await session.flush()
    await audit(session, actor=actor, action="risk.rule_set.reject",
                subject=f"risk_rule_set:{version}", before={"status": "draft"},
                after={"status": "retired", "created_by": rs.created_by,
                       "reason": reason[:500]})
    return rs
