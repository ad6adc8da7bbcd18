"""KYC records and the screening lists.

A *KYC record* is one review of one owner — a user (KYC) or a merchant (KYB: a merchant is
reviewed as a business, with its own records keyed by ``("merchant", id)``, and its tier
governs its wallet, refunds included). It names the tier asked for, the documents seen (by
reference: the documents live in the operator's document store), the checks done, who
reviewed it, the decision and when. Records are only ever inserted: the database refuses
UPDATE and DELETE (a trigger on PostgreSQL and on SQLite, migration 0018), so the history
is the table. The owner's tier is the tier of its latest *approved* record (0 without one);
``users.kyc_tier`` is a cache of it, written only by an approval in the same transaction.

A *screening entry* is one name of an operator-loaded list (``pep`` or ``sanctions``),
stored with its normalised form for matching.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, IdInt, StrEnumType, UtcDateTime

__all__ = ["KycDecision", "KycRecord", "KycRequest", "KycRequestStatus", "ScreeningEntry",
           "ScreeningList"]


class KycDecision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    # Asked to approve, but the name matched a sanctions or PEP list: not approved, and a
    # review item is open.
    BLOCKED = "blocked"


class ScreeningList(StrEnum):
    PEP = "pep"
    SANCTIONS = "sanctions"


class KycRecord(Base):
    __tablename__ = "kyc_records"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    owner_type: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[str] = mapped_column(String(40))
    tier: Mapped[int] = mapped_column(Integer)
    decision: Mapped[KycDecision] = mapped_column(StrEnumType(KycDecision, 16))
    full_name: Mapped[str] = mapped_column(String(200))
    documents: Mapped[str] = mapped_column(Text)  # JSON list of references
    checks: Mapped[str] = mapped_column(Text)  # JSON list of the checks done
    screening: Mapped[str] = mapped_column(Text)  # JSON list of hits (empty: clear)
    reviewer: Mapped[str] = mapped_column(String(80))
    notes: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_kyc_records_owner", "owner_type", "owner_id", "id"),)


class ScreeningEntry(Base):
    __tablename__ = "screening_entries"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    list: Mapped[ScreeningList] = mapped_column(StrEnumType(ScreeningList, 16), index=True)
    name: Mapped[str] = mapped_column(String(300))
    normalized: Mapped[str] = mapped_column(String(300))
    reference: Mapped[str] = mapped_column(String(120), default="")
    loaded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class KycRequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    # Approved by the reviewer, but the name matched a list: the record is ``blocked``.
    BLOCKED = "blocked"


class KycRequest(Base):
    """An owner's request to move to a higher tier, waiting in the operators' review queue.
    Deciding it inserts the :class:`KycRecord` (the history) and links it here; a request is
    decided once (the database holds ``record_id`` set exactly when it is no longer pending).
    """

    __tablename__ = "kyc_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[str] = mapped_column(String(40))
    tier: Mapped[int] = mapped_column(Integer)
    full_name: Mapped[str] = mapped_column(String(200))
    documents: Mapped[str] = mapped_column(Text)  # JSON list of references
    note: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(80))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[KycRequestStatus] = mapped_column(StrEnumType(KycRequestStatus, 16))
    record_id: Mapped[int | None] = mapped_column(ForeignKey("kyc_records.id"), default=None)
    decided_by: Mapped[str | None] = mapped_column(String(80), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    __table_args__ = (
        Index("ix_kyc_requests_status", "status", "requested_at"),
        Index("ix_kyc_requests_owner", "owner_type", "owner_id"),
        # One pending request per owner (migration 0033, with the CHECKs).
        Index("uq_kyc_requests_pending", "owner_type", "owner_id", unique=True,
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
    )
