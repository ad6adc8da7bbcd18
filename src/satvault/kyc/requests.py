"""The KYC review queue: an owner asks for a higher tier (:func:`request_upgrade`), an
operator decides (:func:`decide_request`).

A request changes no tier by itself. Deciding it is :func:`satvault.kyc.service.create_record`
(screening, the reviewer-is-not-the-subject rule, the tier cache, the audit row) with the
request's tier, name and documents and the reviewer's checks and note; the record is the
history, the request only points at it. A request is decided once: its row is locked, and a
second decision is refused (:class:`RequestDecided`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.db import utcnow
from satvault.kernel.errors import NotFound
from satvault.kernel.ids import new_id
from satvault.kyc.errors import InvalidKycInput, RequestDecided
from satvault.kyc.models import KycDecision, KycRequest, KycRequestStatus
from satvault.kyc.service import OWNER_TYPES, RecordRequest, audit_kyc, create_record, tier_of

__all__ = ["decide_request", "get_request", "pending_requests", "request_dict",
           "request_upgrade", "requests_of"]

_STATUS = {KycDecision.APPROVED: KycRequestStatus.APPROVED,
           KycDecision.REJECTED: KycRequestStatus.REJECTED,
           KycDecision.BLOCKED: KycRequestStatus.BLOCKED}


def request_dict(r: KycRequest) -> dict[str, Any]:
    return {"id": r.id, "owner_type": r.owner_type, "owner_id": r.owner_id, "tier": r.tier,
            "full_name": r.full_name, "documents": json.loads(r.documents), "note": r.note,
            "requested_by": r.requested_by, "requested_at": r.requested_at.isoformat(),
            "status": r.status.value, "record_id": r.record_id, "decided_by": r.decided_by,
            "decided_at": r.decided_at.isoformat() if r.decided_at else None}


async def request_upgrade(session: AsyncSession, *, owner_type: str, owner_id: str, tier: int,
                          full_name: str, documents: Sequence[str], requested_by: str,
                          max_tier: int, note: str = "") -> KycRequest:
    """Queue a request for ``tier`` (above the owner's current tier); one pending at a time."""
    if owner_type not in OWNER_TYPES:
        raise InvalidKycInput(f"owner type must be one of {', '.join(OWNER_TYPES)}")
    if not 0 < tier <= max_tier:
        raise InvalidKycInput(f"tier must be between 1 and {max_tier}")
    if not full_name.strip():
        raise InvalidKycInput("the full name to check is required")
    if not documents:
        raise InvalidKycInput("a request names the documents it brings (by reference)")
    current = await tier_of(session, owner_type, owner_id)
    if tier <= current:
        raise InvalidKycInput(f"the owner is at tier {current} already")
    if (await session.execute(select(KycRequest.id).where(
            KycRequest.owner_type == owner_type, KycRequest.owner_id == owner_id,
            KycRequest.status == KycRequestStatus.PENDING))).first() is not None:
        raise InvalidKycInput("a request of this owner is waiting for review already")
    r = KycRequest(id=new_id("kyq"), owner_type=owner_type, owner_id=owner_id, tier=tier,
                   full_name=full_name.strip()[:200], documents=json.dumps(list(documents)),
                   note=note[:4000], requested_by=requested_by[:80], requested_at=utcnow(),
                   status=KycRequestStatus.PENDING)
    session.add(r)
    await session.flush()
    await audit_kyc(session, actor=requested_by, action="kyc.request",
                    subject=f"{owner_type}:{owner_id}", details={"request": r.id, "tier": tier})
    return r


async def pending_requests(session: AsyncSession, *, limit: int = 200) -> list[KycRequest]:
    """The queue, oldest first."""
    return list((await session.execute(select(KycRequest).where(
        KycRequest.status == KycRequestStatus.PENDING).order_by(
        KycRequest.requested_at, KycRequest.id).limit(limit))).scalars())


async def requests_of(session: AsyncSession, owner_type: str, owner_id: str
                      ) -> list[KycRequest]:
    return list((await session.execute(select(KycRequest).where(
        KycRequest.owner_type == owner_type, KycRequest.owner_id == owner_id
    ).order_by(KycRequest.requested_at, KycRequest.id))).scalars())


async def get_request(session: AsyncSession, request_id: str, *, lock: bool = False
                      ) -> KycRequest:
    q = select(KycRequest).where(KycRequest.id == request_id)
    if lock:
        q = q.with_for_update().execution_options(populate_existing=True)
    r = (await session.execute(q)).scalar_one_or_none()
    if r is None:
        raise NotFound(f"KYC request {request_id!r} not found")
    return r


async def decide_request(session: AsyncSession, *, request_id: str, decision: str,
                         reviewer: str, checks: Sequence[str], notes: str, max_tier: int,
                         screening_threshold: int) -> KycRequest:
    """Approve or reject a pending request: the KYC record is inserted (the tier moves only
    with an approval whose name screens clear) and linked to the request."""
    r = await get_request(session, request_id, lock=True)
    if r.status != KycRequestStatus.PENDING:
        raise RequestDecided(f"KYC request {request_id} was decided already "
                             f"({r.status.value} by {r.decided_by})")
    record = await create_record(session, RecordRequest(
        owner_type=r.owner_type, owner_id=r.owner_id, tier=r.tier, decision=decision,
        full_name=r.full_name, documents=json.loads(r.documents), checks=checks,
        reviewer=reviewer, notes=notes), max_tier=max_tier,
        screening_threshold=screening_threshold)
    r.status, r.record_id = _STATUS[record.decision], record.id
    r.decided_by, r.decided_at = reviewer[:80], record.decided_at
    await session.flush()
    return r
