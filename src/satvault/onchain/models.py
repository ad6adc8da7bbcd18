"""On-chain tables: watch-only wallets, their addresses, deposit requests, the payments the
watcher saw, and the blocks it processed (its cursor and reorg detector).

Scripts are stored as lower-case hex so both databases index them the same way.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

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
    func,
    select,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from satvault.db import Amount, Base, IdInt, StrEnumType, UtcDateTime

__all__ = ["COINBASE_MATURITY", "INTERNAL_PURPOSES", "AddressStatus", "ChainBlock", "CreditState",
           "DepositRequest", "DepositStatus",
           "OnchainAddress", "OnchainPayment", "OnchainPaymentStatus", "OnchainWallet",
           "ReviewItem", "ReviewKind"]


# Addresses the platform pays itself: a payout's change, a sweep's or a refill's outputs. A
# payment to one by a move of ours is a move between the platform's own wallets (booked by the
# payout job with the transaction that made it), never a deposit to credit. Anyone else may
# pay one too (``OnchainPayment.paid_from_outside``): the watcher books that as tier funding.
INTERNAL_PURPOSES = ("change", "sweep", "refill")

# Consensus: an output of a block's coinbase transaction may be spent only once it has this
# many confirmations (a transaction spending it earlier is refused, even by the mempool). A
# payment made by a coinbase is credited no sooner, and no move spends it before.
COINBASE_MATURITY = 100


class AddressStatus(StrEnum):
    """``lookahead`` (derived, in the pool) → ``allocated`` (handed out) → ``used`` (money
    arrived) or ``expired`` (may be recycled if nothing ever arrived)."""

    LOOKAHEAD = "lookahead"
    ALLOCATED = "allocated"
    EXPIRED = "expired"
    USED = "used"


class DepositStatus(StrEnum):
    """Where a deposit request stands. The row is written ``open``; the others are computed
    from its payments when it is shown (``deposits.view_deposit``)."""

    OPEN = "open"
    PENDING = "pending"
    PARTIAL = "partial"
    PAID = "paid"
    EXPIRED = "expired"


class OnchainPaymentStatus(StrEnum):
    """What the chain says about an output paid to us."""

    MEMPOOL = "mempool"
    CONFIRMED = "confirmed"
    CONFLICTED = "conflicted"


class CreditState(StrEnum):
    """What the ledger did about it: nothing yet, held (incoming hold), credited, reversed after
    a reorg, or handed to a person (``review``)."""

    NONE = "none"
    PENDING = "pending"
    CREDITED = "credited"
    REVERSED = "reversed"
    REVIEW = "review"


class OnchainWallet(Base):
    __tablename__ = "onchain_wallets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), unique=True)
    descriptor: Mapped[str] = mapped_column(Text)
    network: Mapped[str] = mapped_column(String(16))
    gap_limit: Mapped[int] = mapped_column(Integer)
    next_receive: Mapped[int] = mapped_column(Integer)
    next_change: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OnchainAddress(Base):
    __tablename__ = "onchain_addresses"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("onchain_wallets.id"))
    chain: Mapped[int] = mapped_column(Integer)
    idx: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(100), unique=True)
    script_pubkey: Mapped[str] = mapped_column(String(140), unique=True)
    status: Mapped[AddressStatus] = mapped_column(StrEnumType(AddressStatus, 12))
    owner_type: Mapped[str | None] = mapped_column(String(16))
    owner_id: Mapped[str | None] = mapped_column(String(40))
    purpose: Mapped[str | None] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(40))
    allocated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ever_received: Mapped[bool] = mapped_column(Boolean, default=False)
    times_allocated: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        UniqueConstraint("wallet_id", "chain", "idx", name="position"),
        # The deposit address pool a request claims from (service._claim_pooled).
        Index("ix_onchain_addresses_pool", "wallet_id", "chain", "idx",
              sqlite_where=text(f"status = '{AddressStatus.LOOKAHEAD}'"),
              postgresql_where=text(f"status = '{AddressStatus.LOOKAHEAD}'")),
    )


class DepositRequest(Base):
    __tablename__ = "deposit_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    method: Mapped[str] = mapped_column(String(16))
    address_id: Mapped[int | None] = mapped_column(ForeignKey("onchain_addresses.id"))
    amount_msat: Mapped[int | None] = mapped_column(Amount)
    description: Mapped[str] = mapped_column(String(256), default="")
    required_confirmations: Mapped[int] = mapped_column(Integer)
    status: Mapped[DepositStatus] = mapped_column(StrEnumType(DepositStatus, 12))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The store invoice this deposit is the on-chain half of, if any.
    store_invoice_id: Mapped[str | None] = mapped_column(String(40))


class OnchainPayment(Base):
    __tablename__ = "onchain_payments"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    txid: Mapped[str] = mapped_column(String(64))
    vout: Mapped[int] = mapped_column(Integer)
    address_id: Mapped[int] = mapped_column(ForeignKey("onchain_addresses.id"), index=True)
    script_pubkey: Mapped[str] = mapped_column(String(140))
    value_sat: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[OnchainPaymentStatus] = mapped_column(StrEnumType(OnchainPaymentStatus, 12))
    block_hash: Mapped[str | None] = mapped_column(String(64))
    block_height: Mapped[int | None] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(40), index=True)
    wallet_id: Mapped[str | None] = mapped_column(String(40))
    required_confirmations: Mapped[int] = mapped_column(Integer)
    credit_state: Mapped[CreditState] = mapped_column(StrEnumType(CreditState, 12))
    # Bumped each time an incoming hold is voided (the payment vanished); a payment that comes
    # back is held again under a new transfer id, so ids never collide with a resolved hold.
    hold_generation: Mapped[int] = mapped_column(Integer, default=0)
    spent_by: Mapped[str | None] = mapped_column(String(64))
    # Paid by a coinbase (a miner paying us from its block): spendable, and credited, only at
    # COINBASE_MATURITY confirmations (its required_confirmations are raised to that).
    is_coinbase: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Paid to an address of INTERNAL_PURPOSES by a transaction that spends none of the
    # platform's coins, so by someone else (the address is public once used): no move of
    # ours books it, and the watcher books it like funding of the tier. Decided when the
    # payment is first recorded; always false for other addresses.
    paid_from_outside: Mapped[bool] = mapped_column(Boolean, default=False,
                                                    server_default=false())
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("txid", "vout", name="outpoint"),)

    @classmethod
    def mature(cls, tip_height: int | None = None) -> ColumnElement[bool]:
        """SQL: consensus lets this coin be spent in the block after ``tip_height`` (by default
        the watcher's last block: the node's tip, or a little behind it). Every move planner
        asks it: a coinbase coin picked earlier makes the node refuse the whole transaction,
        and the coin would be picked again at every plan."""
        tip: int | ColumnElement[Any] = tip_height if tip_height is not None else \
            select(func.max(ChainBlock.height)).scalar_subquery()
        return cls.is_coinbase.is_(False) | (cls.block_height <= tip - COINBASE_MATURITY + 1)


class ChainBlock(Base):
    __tablename__ = "chain_blocks"

    height: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReviewKind(StrEnum):
    """The kinds of review item the platform opens (docs/operations.md, "Review items"), each
    written by the code that meets it. The metric ``satvault_review_items_open`` has a series
    for each, zero included, and the shipped Prometheus rules alert on each."""

    DEPOSIT_UNASSIGNED = "deposit_unassigned"  # onchain.watcher
    DEPOSIT_REVERSAL_UNFUNDED = "deposit_reversal_unfunded"  # onchain.watcher
    KYC_SCREENING_HIT = "kyc_screening_hit"  # kyc.service
    SIGNER_LIMIT = "signer_limit"  # payouts.job
    PAYOUT_STUCK = "payout_stuck"  # payouts.job
    PAYOUT_REORGED_CONFLICT = "payout_reorged_conflict"  # payouts.reorgs
    PAYOUT_REORGED_REJECTED = "payout_reorged_rejected"  # payouts.reorgs
    REFILL_NEEDS_COSIGNERS = "refill_needs_cosigners"  # custody.refill
    RECONCILIATION_DIFFERENCE = "reconciliation_difference"  # reconcile.service
    LN_PAYMENT_UNPROVEN = "ln_payment_unproven"  # lightning.payments


_OPEN_ITEM = "resolved_at IS NULL"


class ReviewItem(Base):
    """Something a person must look at: a reversed credit that was already spent, etc. It is
    open until resolved, once: by an admin with a note (``satvault.reconcile.review``), or by
    the code that opened it when the matter settles itself (an accepted refill)."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(120))
    details: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Who resolved it (``user:<id>``, ``system``) and why; empty for items resolved before
    # migration 0056 (by SQL).
    resolved_by: Mapped[str | None] = mapped_column(String(80))
    resolution: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_review_items_open", "kind", "id", sqlite_where=text(_OPEN_ITEM),
              postgresql_where=text(_OPEN_ITEM)),
    )
