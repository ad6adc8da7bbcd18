"""Operator endpoints (admin scope) for KYC: an owner's records (create, history), name
screening on demand, and freezing or unfreezing a wallet. The reviewer of a record is the
admin calling; nobody reviews their own record."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from satvault.accounts.service import Principal
from satvault.kyc import requests as kyc_requests
from satvault.kyc import service as kyc
from satvault.kyc.screening import screen_name
from satvault.web.deps import SessionDep, require_scope
from satvault.web.openapi import problem_responses
from satvault.web.state import settings_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin", tags=["admin", "kyc"],
                   responses=problem_responses(403, 404, 422))
Admin = Annotated[Principal, Depends(require_scope("admin"))]
OwnerType = Literal["user", "merchant"]


class RecordIn(BaseModel):
    tier: int = Field(ge=0, le=100)
    decision: Literal["approve", "reject"]
    full_name: str = Field(min_length=1, max_length=200)
    documents: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list,
                                                                   max_length=50)
    checks: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list,
                                                                max_length=50)
    notes: str = Field(default="", max_length=4000)


class ReasonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class DecideIn(BaseModel):
    decision: Literal["approve", "reject"]
    checks: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list,
                                                                max_length=50)
    notes: str = Field(default="", max_length=4000)


class ScreenIn(BaseModel):
    name: str = Field(min_length=1, max_length=300)


@router.post("/kyc/{owner_type}/{owner_id}/records", status_code=201)
async def create_record(owner_type: OwnerType, owner_id: str, body: RecordIn,
                        session: SessionDep, admin: Admin, request: Request) -> dict[str, Any]:
    """Record a KYC (user) or KYB (merchant) review. An approval raises or sets the owner's
    tier unless the name matches a PEP or sanctions list: then the record is ``blocked`` and
    a review item is opened."""
    settings = settings_of(request)
    record = await kyc.create_record(session, kyc.RecordRequest(
        owner_type=owner_type, owner_id=owner_id, tier=body.tier, decision=body.decision,
        full_name=body.full_name, documents=body.documents, checks=body.checks,
        reviewer=admin.owner_id, notes=body.notes),
        max_tier=max(settings.kyc_tier_limits_msat),
        screening_threshold=settings.kyc_screening_threshold)
    return kyc.record_dict(record)


@router.get("/kyc/{owner_type}/{owner_id}/records")
async def record_history(owner_type: OwnerType, owner_id: str, session: SessionDep,
                         _admin: Admin) -> dict[str, Any]:
    records = await kyc.history(session, owner_type, owner_id)
    return {"owner_type": owner_type, "owner_id": owner_id,
            "kyc_tier": await kyc.tier_of(session, owner_type, owner_id),
            "records": [kyc.record_dict(r) for r in records]}


@router.get("/kyc/requests")
async def pending_requests(session: SessionDep, _admin: Admin) -> list[dict[str, Any]]:
    """The KYC review queue: requests for a higher tier waiting for a decision, oldest
    first."""
    return [kyc_requests.request_dict(r) for r in await kyc_requests.pending_requests(session)]


@router.post("/kyc/requests/{request_id}/decide", responses=problem_responses(409))
async def decide_request(request_id: str, body: DecideIn, session: SessionDep, admin: Admin,
                         request: Request) -> dict[str, Any]:
    """Approve or reject a queued request: a KYC record is inserted (screened, audited; an
    approval sets the tier) and linked to the request. A decided request is not decided
    again (409)."""
    settings = settings_of(request)
    r = await kyc_requests.decide_request(
        session, request_id=request_id, decision=body.decision, reviewer=admin.owner_id,
        checks=body.checks, notes=body.notes, max_tier=max(settings.kyc_tier_limits_msat),
        screening_threshold=settings.kyc_screening_threshold)
    return kyc_requests.request_dict(r)


@router.post("/kyc/screen")
async def screen(body: ScreenIn, session: SessionDep, _admin: Admin,
                 request: Request) -> dict[str, Any]:
    """Screen a name against the loaded PEP and sanctions lists (on demand)."""
    hits = await screen_name(session, body.name,
                             threshold=settings_of(request).kyc_screening_threshold)
    return {"name": body.name, "hits": [h.as_dict() for h in hits]}


@router.post("/wallets/{wallet_id}/freeze")
async def freeze(wallet_id: str, body: ReasonIn, session: SessionDep,
                 admin: Admin) -> dict[str, Any]:
    w = await kyc.freeze(session, wallet_id=wallet_id, reason=body.reason,
                         actor=admin.owner_id)
    return {"id": w.id, "frozen": True, "frozen_at": w.frozen_at, "reason": w.frozen_reason}


@router.post("/wallets/{wallet_id}/unfreeze")
async def unfreeze(wallet_id: str, body: ReasonIn, session: SessionDep,
                   admin: Admin) -> dict[str, Any]:
    w = await kyc.unfreeze(session, wallet_id=wallet_id, reason=body.reason,
                           actor=admin.owner_id)
    return {"id": w.id, "frozen": False, "reason": body.reason}
