"""Operator endpoints of the rules engine (admin scope): explain a decision, list, propose
approve or reject rule sets (a draft goes live only when an admin other than its author
approves; likewise only another admin rejects it)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from sqlalchemy import select

from satvault.accounts.service import Principal
from satvault.risk import service as risk
from satvault.risk.models import RiskRuleSet
from satvault.web.deps import SessionDep, require_scope
from satvault.web.fields import STRICT_BODY
from satvault.web.openapi import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin/risk", tags=["admin", "risk"],
                   responses=problem_responses(404, 409, 422))
Admin = Annotated[Principal, Depends(require_scope("admin"))]


def _actor(p: Principal) -> str:
    return f"{p.owner_type}:{p.owner_id}"


def _rule_set(rs: RiskRuleSet, *, rules: bool = False) -> dict[str, Any]:
    import json
    out: dict[str, Any] = {
        "version": rs.version, "status": rs.status.value, "note": rs.note,
        "created_by": rs.created_by, "created_at": rs.created_at.isoformat(),
        "approved_by": rs.approved_by,
        "approved_at": rs.approved_at.isoformat() if rs.approved_at else None}
    if rules:
        out["rules"] = json.loads(rs.rules)
    return out


@router.get("/decisions/{decision_id}")
async def explain_decision(
    decision_id: Annotated[str, Path(max_length=40)], session: SessionDep, _admin: Admin,
) -> dict[str, Any]:
    """Why a payment was approved, held or refused: each rule's inputs, whether it matched
    and what it added, the total against the thresholds, the rule-set version, the case."""
    return await risk.explain(session, decision_id)


@router.get("/rule-sets")
async def list_rule_sets(session: SessionDep, _admin: Admin) -> list[dict[str, Any]]:
    await risk.live_rule_set(session)  # the shipped default, the first time
    rows = (await session.execute(select(RiskRuleSet).order_by(
        RiskRuleSet.version.desc()).limit(100))).scalars()
    return [_rule_set(r) for r in rows]


@router.get("/rule-sets/{version}")
async def get_rule_set(version: Annotated[int, Path(ge=1, le=2**63 - 1)],
                       session: SessionDep, _admin: Admin) -> dict[str, Any]:
    from satvault.kernel.errors import NotFound
    rs = await session.get(RiskRuleSet, version)
    if rs is None:
        raise NotFound(f"rule set version {version} not found")
    return _rule_set(rs, rules=True)


class RuleSetIn(BaseModel):
    model_config = STRICT_BODY
    rules: dict[str, Any]
    note: str = Field(default="", max_length=500)


@router.post("/rule-sets", status_code=201)
async def propose_rule_set(session: SessionDep, admin: Admin, body: RuleSetIn
                           ) -> dict[str, Any]:
    """A new draft, validated strictly; it changes nothing until a second admin approves."""
    rs = await risk.propose_rule_set(session, rules=body.rules, actor=_actor(admin),
                                     note=body.note)
    return _rule_set(rs, rules=True)


@router.post("/rule-sets/{version}/approve")
async def approve_rule_set(version: Annotated[int, Path(ge=1, le=2**63 - 1)],
                           session: SessionDep, admin: Admin) -> dict[str, Any]:
    rs = await risk.approve_rule_set(session, version=version, actor=_actor(admin))
    return _rule_set(rs)


@router.post("/rule-sets/{version}/reject")
async def reject_rule_set(version: Annotated[int, Path(ge=1, le=2**63 - 1)],
                          session: SessionDep, admin: Admin) -> dict[str, Any]:
    """Retire a draft that never goes live; like an approval, not by its author."""
    rs = await risk.reject_rule_set(session, version=version, actor=_actor(admin))
    return _rule_set(rs)
