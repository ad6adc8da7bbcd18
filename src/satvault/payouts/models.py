"""Withdrawals and the on-chain transactions that move the platform's coins.

A *batch* is one transaction of ours whose *versions* (the original and any fee bumps, all
spending the same inputs) are ``payout_txs``. Its ``kind`` says why it exists:

* ``payout``: pays withdrawals from the semi-cold (``hot``) wallet, signed by the hot signer;
* ``sweep``: moves confirmed deposit coins into the semi-cold and cold wallets, signed by the
  hot signer (it may only pay the platform's own descriptors);
* ``refill``: moves cold coins back to semi-cold; it waits in ``cosigning`` until enough
  offline cosigners have signed (``satvault cold import``), then goes on like the others.

A withdrawal belongs to at most one batch. A UTXO is reserved by at most one live batch
(``payout_inputs.payment_id`` is unique), and at most one sweep and one refill are live at a
time (a partial unique index).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Amount, Base, IdInt, StrEnumType, UtcDateTime

__all__ = ["LIVE_STATUSES", "BatchStatus", "MoveKind", "PayoutBatch", "PayoutInput", "PayoutTx",
           "Withdrawal", "WithdrawalMethod", "WithdrawalStatus"]


class WithdrawalMethod(StrEnum):
    ONCHAIN = "onchain"
    LIGHTNING = "lightning"
    INTERNAL = "internal"


class WithdrawalStatus(StrEnum):
    """``pending`` → (on-chain: ``batched`` →) ``broadcast`` → ``confirmed``; or ``failed`` /
    ``cancelled``, whose hold is released. A withdrawal the withdrawal policy holds for
    approvers starts in ``awaiting_approval`` (its money held, picked up by no payer) and
    becomes ``pending`` on its final approval or ``cancelled`` on rejection or expiry.
    ``review``: held by a risk decision (its hold kept); neither the payout job nor the
    Lightning payer picks it up; a case decides."""

    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    REVIEW = "review"
    BATCHED = "batched"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MoveKind(StrEnum):
    PAYOUT = "payout"
    SWEEP = "sweep"
    REFILL = "refill"


class BatchStatus(StrEnum):
    """``signing`` (or, for a refill, ``cosigning``) → ``signed`` → ``broadcast`` →
    ``confirmed`` (still watched for a reorg until ``final_at``); ``abandoned`` (its
    withdrawals went back to ``pending``, its coins are free again) or ``stuck`` (a person
    must look)."""

    COSIGNING = "cosigning"
    SIGNING = "signing"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    ABANDONED = "abandoned"
    STUCK = "stuck"


_ONE_LIVE = ("kind IN ('sweep','refill') AND status IN "
             "('cosigning','signing','signed','broadcast')")

_WATCHED = "status = 'confirmed' AND final_at IS NULL"

# A batch in one of these holds its inputs and is moved forward by the payout job.
LIVE_STATUSES = (BatchStatus.COSIGNING, BatchStatus.SIGNING, BatchStatus.SIGNED,
                 BatchStatus.BROADCAST)


class Withdrawal(Base):
    __tablename__ = "withdrawals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    method: Mapped[WithdrawalMethod] = mapped_column(StrEnumType(WithdrawalMethod, 16))
    destination: Mapped[str] = mapped_column(String(2000))
    script_pubkey: Mapped[str | None] = mapped_column(String(140))
    amount_msat: Mapped[int] = mapped_column(Amount)
    fee_reserve_msat: Mapped[int] = mapped_column(Amount)
    fee_msat: Mapped[int | None] = mapped_column(Amount)
    status: Mapped[WithdrawalStatus] = mapped_column(StrEnumType(WithdrawalStatus, 20))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("payout_batches.id"), index=True)
    txid: Mapped[str | None] = mapped_column(String(64))
    hold_id: Mapped[str] = mapped_column(String(128), unique=True)
    # Set when a store asked for it (a refund): its webhooks hear about the withdrawal.
    store_id: Mapped[str | None] = mapped_column(String(40))
    # A refund's store invoice: refunds of one invoice add up to at most what it received.
    invoice_id: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # A withdrawal held (for approvers, or for review) leaves when it is released: from then
    # on the withdrawal limits' windows count it from this time (from ``created_at`` while
    # held). Null for one that never waited. (Index: migration 0050, partial.)
    released_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Who asked (a user id), kept for a withdrawal held for review: the approvers exclude
    # them once its case releases it (migration 0074). Null otherwise: the policy is applied
    # when the withdrawal is made, with the caller at hand.
    initiator: Mapped[str | None] = mapped_column(String(40), default=None)


class PayoutBatch(Base):
    __tablename__ = "payout_batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[MoveKind] = mapped_column(StrEnumType(MoveKind, 8), default=MoveKind.PAYOUT)
    status: Mapped[BatchStatus] = mapped_column(StrEnumType(BatchStatus, 12))
    psbt: Mapped[str] = mapped_column(Text)
    # A refill: the cosigners' partial signatures merged so far (BIP174 combined PSBT).
    partial_psbt: Mapped[str | None] = mapped_column(Text)
    txid: Mapped[str | None] = mapped_column(String(64))
    feerate_sat_vb: Mapped[int] = mapped_column(Integer)
    fee_sat: Mapped[int] = mapped_column(BigInteger)
    change_address_id: Mapped[int | None] = mapped_column(ForeignKey("onchain_addresses.id"))
    broadcast_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    broadcast_height: Mapped[int | None] = mapped_column(Integer)
    confirmed_height: Mapped[int | None] = mapped_column(Integer)
    # A confirmed move is watched (a reorg may take it out of the chain) until it is
    # ``payout_final_confirmations`` deep; then this is set and it is never looked at again.
    final_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # At most one live sweep and one live refill (migration 0015).
        Index("uq_payout_batches_one_live_move", "kind", unique=True,
              sqlite_where=text(_ONE_LIVE), postgresql_where=text(_ONE_LIVE)),
        # The confirmed moves not yet final: what the payout job watches at every pass.
        Index("ix_payout_batches_watched", "created_at",
              sqlite_where=text(_WATCHED), postgresql_where=text(_WATCHED)),
    )


class PayoutTx(Base):
    __tablename__ = "payout_txs"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("payout_batches.id"), index=True)
    txid: Mapped[str] = mapped_column(String(64), unique=True)
    raw_tx: Mapped[str] = mapped_column(Text)
    psbt: Mapped[str] = mapped_column(Text)
    fee_sat: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PayoutInput(Base):
    __tablename__ = "payout_inputs"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("payout_batches.id"), index=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("onchain_payments.id"), unique=True)
