"""KYC records, an owner's tier, and wallet freezes (services: a session and plain values;
the caller owns the transaction).

An owner moves between tiers only through :func:`create_record`: the tier is the latest
approved record's (:func:`tier_of`), never a field anyone sets. Every record is screened
against the PEP and sanctions lists first; a hit turns an approval into ``blocked`` and opens a
review item. Freezes and unfreezes are audited through :func:`audit_kyc`, the one place this
package writes audit rows (so they can be sent to the hash-chained log in one edit).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, User, Wallet
from satvault.audit.service import record as audit_record
from satvault.db import utcnow
from satvault.kernel.errors import NotFound
from satvault.kernel.text import free_text, one_line
from satvault.kyc.errors import InvalidKycInput, ReviewerIsSubject
from satvault.kyc.models import KycDecision, KycRecord
from satvault.kyc.screening import screen_name
from satvault.onchain.models import ReviewItem

__all__ = ["OWNER_TYPES", "RecordRequest", "audit_kyc", "create_record", "freeze", "history",
           "record_dict", "tier_expr", "tier_of", "unfreeze"]

OWNER_TYPES = ("user", "merchant")


async def audit_kyc(session: AsyncSession, *, actor: str, action: str, subject: str,
                    details: dict[str, Any]) -> None:
    """The one audit write of this package: a row of the hash-chained audit log."""
    await audit_record(session, actor=actor, action=action, object=subject, after=details)


def tier_expr(owner_type: str | ColumnElement[str], owner_id: str | ColumnElement[str]
              ) -> ColumnElement[int]:
    """The owner's tier as an SQL expression (folded into the withdrawal's one statement);
    the owner as values or as bound parameters (a statement built once)."""
    latest = select(KycRecord.tier).where(
        KycRecord.owner_type == owner_type, KycRecord.owner_id == owner_id,
        KycRecord.decision == KycDecision.APPROVED,
    ).order_by(KycRecord.id.desc()).limit(1).scalar_subquery()
    return func.coalesce(latest, 0)


async def tier_of(session: AsyncSession, owner_type: str, owner_id: str) -> int:
    return int((await session.execute(select(tier_expr(owner_type, owner_id)))).scalar_one())


@dataclass(frozen=True, slots=True)
class RecordRequest:
    owner_type: str
    owner_id: str
    tier: int
    decision: str  # "approve" or "reject"
    full_name: str
    documents: Sequence[str]
    checks: Sequence[str]
    reviewer: str
    notes: str = ""


def record_dict(r: KycRecord) -> dict[str, Any]:
    return {"id": r.id, "owner_type": r.owner_type, "owner_id": r.owner_id, "tier": r.tier,
            "decision": r.decision.value, "full_name": r.full_name,
            "documents": json.loads(r.documents), "checks": json.loads(r.checks),
            "screening_hits": json.loads(r.screening), "reviewer": r.reviewer,
            "notes": r.notes, "decided_at": r.decided_at.isoformat()}


async def _subject_users(session: AsyncSession, owner_type: str, owner_id: str) -> set[str]:
    """The user ids the subject stands for (itself; a merchant's owner); NotFound if none."""
    if owner_type == "user":
        if await session.get(User, owner_id) is None:
            raise NotFound(f"no user {owner_id}")
        return {owner_id}
    m = await session.get(Merchant, owner_id)
    if m is None:
        raise NotFound(f"no merchant {owner_id}")
    return {owner_id, *([m.owner_user_id] if m.owner_user_id else [])}


async def create_record(session: AsyncSession, req: RecordRequest, *, max_tier: int,
                        screening_threshold: int) -> KycRecord:
    """Insert one KYC record: screened first; an approval with a hit is stored as
    ``blocked`` with a review item. An approval updates the ``users.kyc_tier`` cache in the
    same transaction."""
    if req.owner_type not in OWNER_TYPES:
        raise InvalidKycInput(f"owner type must be one of {', '.join(OWNER_TYPES)}")
    if req.decision not in ("approve", "reject"):
        raise InvalidKycInput("decision must be approve or reject")
    if not 0 <= req.tier <= max_tier:
        raise InvalidKycInput(f"tier must be between 0 and {max_tier}")
    if not req.full_name.strip():
        raise InvalidKycInput("full_name (the name checked and screened) is required")
    # The API's bounds, for every caller (found from outside: the CLI stored 5,000-character
    # names and document references). The name keeps what the reviewer typed (screened with
    # hidden characters taken out: satvault.kyc.screening); the rest is plain text.
    if len(req.full_name) > 200 or "\x00" in req.full_name:
        raise InvalidKycInput("full_name is at most 200 characters, with no NUL")
    if len(req.documents) > 50 or len(req.checks) > 50:
        raise InvalidKycInput("at most 50 documents and 50 checks")
    for ref in (*req.documents, *req.checks):
        if len(ref) > 300:
            raise InvalidKycInput("a document reference or check is at most 300 characters")
        one_line(ref, "a document reference or check")
    if len(req.notes) > 4000:
        raise InvalidKycInput("notes are at most 4,000 characters")
    free_text(req.notes, "the notes")
    reviewer = req.reviewer.strip()
    if not reviewer:
        raise InvalidKycInput("a reviewer is required")
    if req.decision == "approve" and (not req.documents or not req.checks):
        raise InvalidKycInput("an approval names the documents seen and the checks done")
    if reviewer in await _subject_users(session, req.owner_type, req.owner_id):
        raise ReviewerIsSubject("the reviewer of a KYC record cannot be its subject")
    hits = await screen_name(session, req.full_name, threshold=screening_threshold)
    decision = KycDecision.REJECTED if req.decision == "reject" else (
        KycDecision.BLOCKED if hits else KycDecision.APPROVED)
    record = KycRecord(owner_type=req.owner_type, owner_id=req.owner_id, tier=req.tier,
                       decision=decision, full_name=req.full_name.strip()[:200],
                       documents=json.dumps(list(req.documents)),
                       checks=json.dumps(list(req.checks)),
                       screening=json.dumps([h.as_dict() for h in hits]), reviewer=reviewer,
                       notes=req.notes, decided_at=utcnow())
    session.add(record)
    await session.flush()
    subject = f"{req.owner_type}:{req.owner_id}"
    if hits:
        session.add(ReviewItem(kind="kyc_screening_hit", subject=subject,
                               details=json.dumps({"kyc_record": record.id,
                                                   "name": record.full_name,
                                                   "hits": [h.as_dict() for h in hits]}),
                               created_at=utcnow()))
    if decision == KycDecision.APPROVED and req.owner_type == "user":
        await session.execute(update(User).where(User.id == req.owner_id)
                              .values(kyc_tier=req.tier))
    await audit_kyc(session, actor=reviewer, action="kyc.record", subject=subject,
                    details={"record": record.id, "tier": req.tier,
                             "decision": decision.value, "screening_hits": len(hits)})
    return record


async def history(session: AsyncSession, owner_type: str, owner_id: str) -> list[KycRecord]:
    return list((await session.execute(select(KycRecord).where(
        KycRecord.owner_type == owner_type, KycRecord.owner_id == owner_id
    ).order_by(KycRecord.id))).scalars())


async def _wallet(session: AsyncSession, wallet_id: str) -> Wallet:
    w = (await session.execute(select(Wallet).where(Wallet.id == wallet_id)
                               .with_for_update())).scalar_one_or_none()
    if w is None:
        raise NotFound(f"no wallet {wallet_id}")
    return w


async def freeze(session: AsyncSession, *, wallet_id: str, reason: str, actor: str,
                 now: datetime | None = None) -> Wallet:
    reason = free_text(reason.strip(), "a freeze reason")
    if not reason:
        raise InvalidKycInput("a freeze needs a reason")
    w = await _wallet(session, wallet_id)
    if w.frozen_at is not None:
        raise InvalidKycInput(f"wallet {wallet_id} is frozen already ({w.frozen_reason})")
    w.frozen_at, w.frozen_reason = now or utcnow(), reason[:500]
    await session.flush()
    await audit_kyc(session, actor=actor, action="wallet.freeze", subject=wallet_id,
                    details={"reason": reason})
    return w


async def unfreeze(session: AsyncSession, *, wallet_id: str, reason: str, actor: str) -> Wallet:
    reason = free_text(reason.strip(), "an unfreeze reason")
    if not reason:
        raise InvalidKycInput("an unfreeze needs a reason")
    w = await _wallet(session, wallet_id)
    if w.frozen_at is None:
        raise InvalidKycInput(f"wallet {wallet_id} is not frozen")
    if actor.removeprefix("user:") in await _subject_users(session, w.owner_type, w.owner_id):
        # As nobody reviews themselves (found from outside: an admin unfroze their own
        # merchant's wallet that another admin had frozen, and could withdraw again).
        raise ReviewerIsSubject("a wallet is unfrozen by an admin other than its owner")
    was = w.frozen_reason
    w.frozen_at, w.frozen_reason = None, None
    await session.flush()
    await audit_kyc(session, actor=actor, action="wallet.unfreeze", subject=wallet_id,
                    details={"reason": reason, "frozen_for": was})
    return w
