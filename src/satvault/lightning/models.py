"""Lightning tables: invoices we issued, payments we sent, the listener's cursor, and the
internal payments refused after they took the payee's invoice off the node.

One outgoing payment per payment hash can be live or successful at a time (a partial unique
index): the database itself refuses to pay one invoice twice from here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Amount, Base, IdInt, StrEnumType, UtcDateTime

__all__ = [
    "ISSUED_ON_REQUEST",
    "InternalRefusal",
    "LnCursor",
    "LnInvoice",
    "LnInvoiceStatus",
    "LnPayment",
    "LnPaymentStatus",
    "LnTake",
]

# The purpose of an invoice our LNURL-pay service (a Lightning Address, a pay link) issued for
# one payer's request: nobody else waits on it, so losing it to a refusal costs its payee
# nothing (not counted in ``internal_refusals``; a fresh one is one request away).
ISSUED_ON_REQUEST = "lnurl"


class LnInvoiceStatus(StrEnum):
    """``open`` (payable, on the node) → ``paid``, ``expired`` or ``canceled``. ``reserved``:
    off the node, kept for an internal payment the risk rules hold for review, until its case
    releases it (``paid``) or returns the money (``canceled``); nobody else may pay it."""

    OPEN = "open"
    RESERVED = "reserved"
    PAID = "paid"
    EXPIRED = "expired"
    CANCELED = "canceled"


class LnPaymentStatus(StrEnum):
    """``pending`` (queued) → ``in_flight`` (handed to the node) → ``succeeded`` or ``failed``;
    ``unknown`` when the node's answer was lost (settled later, never refunded on a guess);
    ``retry`` is a new attempt queued after a failure."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    UNKNOWN = "unknown"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"


# The attempts that may still pay (or paid) their hash: at most one per hash (a partial unique
# index, written with literal values so both planners can use it).
_ONE_PER_HASH = (LnPaymentStatus.PENDING, LnPaymentStatus.IN_FLIGHT, LnPaymentStatus.UNKNOWN,
                 LnPaymentStatus.SUCCEEDED)
_ONE_PER_HASH_SQL = "status IN ({})".format(",".join(f"'{s}'" for s in _ONE_PER_HASH))


class LnInvoice(Base):
    __tablename__ = "ln_invoices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    payment_hash: Mapped[str] = mapped_column(String(64), unique=True)
    bolt11: Mapped[str] = mapped_column(Text)
    amount_msat: Mapped[int | None] = mapped_column(Amount)
    description: Mapped[str] = mapped_column(String(640))
    description_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[LnInvoiceStatus] = mapped_column(StrEnumType(LnInvoiceStatus, 12))
    paid_msat: Mapped[int | None] = mapped_column(Amount)
    internal: Mapped[bool] = mapped_column(Boolean, default=False)
    store_invoice_id: Mapped[str | None] = mapped_column(String(40), index=True)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # A BOLT11 a client sends is looked up as ours before it is decoded (equality only:
        # a hash index on PostgreSQL, which also has no key-size limit for long invoices).
        Index("ix_ln_invoices_bolt11", "bolt11", postgresql_using="hash"),
    )


class LnPayment(Base):
    __tablename__ = "ln_payments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    withdrawal_id: Mapped[str] = mapped_column(ForeignKey("withdrawals.id"), index=True)
    payment_hash: Mapped[str] = mapped_column(String(64))
    bolt11: Mapped[str] = mapped_column(Text)
    amountless: Mapped[bool] = mapped_column(Boolean)
    attempt: Mapped[int] = mapped_column(Integer)
    amount_msat: Mapped[int] = mapped_column(Amount)
    fee_limit_msat: Mapped[int] = mapped_column(Amount)
    fee_msat: Mapped[int | None] = mapped_column(Amount)
    status: Mapped[LnPaymentStatus] = mapped_column(StrEnumType(LnPaymentStatus, 12))
    preimage: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(String(120))
    next_try_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The node's index of the record a failed attempt failed on (LND's payment index, which
    # a new attempt of the hash replaces): a FAILED read later under it is this attempt's,
    # not the next one's (migration 0084).
    node_index: Mapped[int | None] = mapped_column(BigInteger)
    # When the payer last handed this attempt to the node (its claim).
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("payment_hash", "attempt", name="hash_attempt"),
        UniqueConstraint("withdrawal_id", "attempt", name="withdrawal_attempt"),
        Index("uq_ln_payments_live_hash", "payment_hash", unique=True,
              postgresql_where=text(_ONE_PER_HASH_SQL),
              sqlite_where=text(_ONE_PER_HASH_SQL)),
    )


class LnCursor(Base):
    """Where the invoice listener resumes: LND's settle_index / CLN's pay_index."""

    __tablename__ = "ln_cursors"

    node: Mapped[str] = mapped_column(String(40), primary_key=True)
    settle_index: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)




class InternalRefusal(Base):
    """An internal payment refused after it took another wallet's invoice off the node (or
    held for review, and returned by its case): the payee lost that BOLT11. Counted against
    the paying wallet's person (``internal_refusals_per_day``; the owner's wallets together):
    one that used them up is refused before it can take another invoice off the node
    (:mod:`satvault.withdrawals.refused`).
    Invoices issued on request (:data:`ISSUED_ON_REQUEST`) are neither counted nor refused:
    nobody else waits on them."""

    __tablename__ = "internal_refusals"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))  # the payer
    # The payer's person (satvault.accounts.persons.person_of) when it was refused: counted by
    # it, so a user's wallet and their merchants' share one budget (migration 0069).
    person: Mapped[str | None] = mapped_column(String(64))
    payment_hash: Mapped[str] = mapped_column(String(64))  # the payee's invoice
    at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_internal_refusals_wallet_at", "wallet_id", "at"),
                      Index("ix_internal_refusals_person_at", "person", "at"))


class LnTake(Base):
    """An invoice of ours a payment is taking off the node (migration 0082): written, under
    the paying person's lock, before the node is asked, so the payments a person has in
    flight are known to the next one (:mod:`satvault.lightning.takes`). In flight while its
    invoice is still ``open`` in the database and the take is younger than
    :data:`~satvault.lightning.takes.TAKE_SECONDS`; the unit of work that pays or refuses
    the invoice ends it by changing the invoice's status, and a trigger on ``ln_invoices``
    marks it ``done`` then (migration 0083; the takes in flight are read through a partial
    index of those not done: before, every take read the person's last two minutes of takes
    to find the few in flight). A done take keeps its Idempotency-Key for those two minutes:
    the same key on another invoice is refused before that invoice leaves the node."""

    __tablename__ = "ln_takes"

    payment_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(String(40))  # the payer
    person: Mapped[str] = mapped_column(String(64))  # the payer's (accounts.persons)
    amount_msat: Mapped[int] = mapped_column(Amount)
    # SHA-256 of the caller and its Idempotency-Key ("" without one): one key, one take.
    request: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    done: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (Index("ix_ln_takes_person_at", "person", "at"),
                      Index("ix_ln_takes_live", "person", "at",
                            postgresql_where=text("NOT done"), sqlite_where=text("NOT done")),
                      Index("ix_ln_takes_request", "request", "at",
                            postgresql_where=text("request <> ''"),
                            sqlite_where=text("request <> ''")))
