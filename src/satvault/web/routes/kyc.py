"""KYC endpoints. Operators (admin scope, :data:`router`): an owner's records (create,
history), the review queue, name screening on demand, and freezing or unfreezing a wallet;
the reviewer of a record is the admin calling, nobody reviews their own record. Owners
(:data:`owner_router`): a merchant's or a user's own key asks for a higher tier (the request
waits in the operators' queue; one pending at a time) and reads its tier, its limits, its
records and its requests."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, User
from satvault.accounts.service import Principal
from satvault.config import Settings
from satvault.kernel.errors import Forbidden, NotFound
from satvault.kyc import requests as kyc_requests
from satvault.kyc import service as kyc
from satvault.kyc.limits import limits_for, top_tier
from satvault.kyc.screening import screen_name
from satvault.web.deps import SessionDep, require_any_scope, require_scope
from satvault.web.fields import STRICT_BODY, StrictInt
from satvault.web.openapi import problem_responses
from satvault.web.state import settings_of

__all__ = ["UpgradeIn", "ask_upgrade", "kyc_status", "owner_of", "owner_router", "router"]

router = APIRouter(prefix="/api/v1/admin", tags=["admin", "kyc"],
                   responses=problem_responses(403, 404, 422))
Admin = Annotated[Principal, Depends(require_scope("admin"))]
OwnerType = Literal["user", "merchant"]
owner_router = APIRouter(prefix="/api/v1/kyc", tags=["kyc"],
                         responses=problem_responses(403, 404, 422))
OwnerReader = Annotated[Principal, Depends(require_any_scope("wallet:read", "wallet:write"))]
OwnerWriter = Annotated[Principal, Depends(require_scope("wallet:write"))]


class RecordIn(BaseModel):
    model_config = STRICT_BODY
    tier: StrictInt = Field(ge=0, le=100)
    decision: Literal["approve", "reject"]
    full_name: str = Field(min_length=1, max_length=200)
    documents: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list,
                                                                   max_length=50)
    checks: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list,
                                                                max_length=50)
    notes: str = Field(default="", max_length=4000)


class ReasonIn(BaseModel):
    model_config = STRICT_BODY
    reason: str = Field(min_length=1, max_length=500)


class DecideIn(BaseModel):
    model_config = STRICT_BODY
    decision: Literal["approve", "reject"]
    checks: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list,
                                                                max_length=50)
    notes: str = Field(default="", max_length=4000)


class ScreenIn(BaseModel):
    model_config = STRICT_BODY
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


# ------------------------------------------------------------------ the owner's own KYC


class UpgradeIn(BaseModel):
    model_config = STRICT_BODY
    tier: StrictInt | None = Field(default=None, ge=1, le=100,
                             description="The tier asked for; the next one by default.")
    full_name: str = Field(min_length=1, max_length=200)
    documents: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        min_length=1, max_length=50,
        description="References to the documents (e.g. docstore URIs the operator opens).")
    note: str = Field(default="", max_length=4000)
    owner_type: OwnerType | None = Field(default=None, description="Admin keys only.")
    owner_id: str | None = Field(default=None, max_length=40, description="Admin keys only.")


def owner_of(principal: Principal, owner_type: str | None = None,
             owner_id: str | None = None) -> tuple[str, str]:
    """The KYC subject a key speaks for: its own merchant or user. An admin key names one;
    a store key is refused (its merchant's key asks); another owner's id is not found."""
    if principal.is_admin:
        if not (owner_type and owner_id):
            raise NotFound("an admin key names the owner_type and owner_id")
        return owner_type, owner_id
    if principal.owner_type not in kyc.OWNER_TYPES:
        raise Forbidden("a store key cannot speak for its merchant's KYC; use the "
                        "merchant's key")
    if (owner_type or principal.owner_type, owner_id or principal.owner_id) != (
            principal.owner_type, principal.owner_id):
        raise NotFound(f"{owner_type} {owner_id!r} not found")
    return principal.owner_type, principal.owner_id


async def _existing(session: AsyncSession, owner_type: str, owner_id: str) -> None:
    """An admin key may name any owner, but only one that exists."""
    model = Merchant if owner_type == "merchant" else User
    if await session.get(model, owner_id) is None:
        raise NotFound(f"{owner_type} {owner_id!r} not found")


async def ask_upgrade(session: AsyncSession, *, settings: Settings, owner_type: str,
                      owner_id: str, body: UpgradeIn, requested_by: str) -> dict[str, Any]:
    """Queue the owner's request for ``body.tier`` (the next tier by default)."""
    await _existing(session, owner_type, owner_id)
    tier = body.tier
    if tier is None:
        tier = await kyc.tier_of(session, owner_type, owner_id) + 1
    r = await kyc_requests.request_upgrade(
        session, owner_type=owner_type, owner_id=owner_id, tier=tier,
        full_name=body.full_name, documents=body.documents, requested_by=requested_by,
        max_tier=max(settings.kyc_tier_limits_msat), note=body.note)
    return kyc_requests.request_dict(r)


async def kyc_status(session: AsyncSession, *, settings: Settings, owner_type: str,
                     owner_id: str) -> dict[str, Any]:
    """The owner's tier, the limits of that tier (and of the next) per rail, its records and
    its requests (oldest first)."""
    await _existing(session, owner_type, owner_id)
    table = settings.kyc_tier_limits_msat
    tier = await kyc.tier_of(session, owner_type, owner_id)

    def limits(t: int) -> dict[str, dict[str, int]]:
        out = {}
        for rail in sorted(table[min(t, top_tier(table))]):
            lim = limits_for(table, t, rail)
            out[rail] = {"per_tx_msat": lim.per_tx_msat, "day_msat": lim.day_msat,
                         "month_msat": lim.month_msat}
        return out
    nxt = tier + 1 if tier < top_tier(table) else None
    return {"owner_type": owner_type, "owner_id": owner_id, "kyc_tier": tier,
            "max_tier": top_tier(table), "next_tier": nxt, "limits": limits(tier),
            "next_limits": limits(nxt) if nxt is not None else None,
            "records": [kyc.record_dict(r) for r in
                        await kyc.history(session, owner_type, owner_id)],
            "requests": [kyc_requests.request_dict(r) for r in
                         await kyc_requests.requests_of(session, owner_type, owner_id)]}


@owner_router.post("/requests", status_code=201)
async def request_upgrade(body: UpgradeIn, session: SessionDep, principal: OwnerWriter,
                          request: Request) -> dict[str, Any]:
    """Ask for a higher KYC tier for the key's own merchant or user, naming the documents
    brought (by reference). The request waits in the operators' review queue; while one is
    pending another is refused (422)."""
    owner_type, owner_id = owner_of(principal, body.owner_type, body.owner_id)
    return await ask_upgrade(session, settings=settings_of(request), owner_type=owner_type,
                             owner_id=owner_id, body=body,
                             requested_by=f"key:{principal.key_id}")


@owner_router.get("/requests")
async def own_requests(session: SessionDep, principal: OwnerReader, request: Request,
                       owner_type: OwnerType | None = None,
                       owner_id: Annotated[str | None, Query(max_length=40)] = None
                       ) -> dict[str, Any]:
    """The key's owner's KYC tier, its limits per rail, its records and its requests with
    their status."""
    kind, oid = owner_of(principal, owner_type, owner_id)
    return await kyc_status(session, settings=settings_of(request), owner_type=kind,
                            owner_id=oid)
