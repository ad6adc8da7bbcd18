"""Withdrawals and the payout transactions that pay them.

A withdrawal belongs to at most one batch; a batch is one payout transaction whose *versions*
(the original and any fee bumps, all spending the same inputs) are ``payout_txs``. A UTXO is
reserved by at most one live batch (``payout_inputs.payment_id`` is unique).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Amount, Base, IdInt, StrEnumType, UtcDateTime

__all__ = ["BatchStatus", "PayoutBatch", "PayoutInput", "PayoutTx", "Withdrawal",
           "WithdrawalMethod", "WithdrawalStatus"]


class WithdrawalMethod(StrEnum):
    ONCHAIN = "onchain"
    LIGHTNING = "lightning"
    INTERNAL = "internal"


class WithdrawalStatus(StrEnum):
    """``pending`` → (on-chain: ``batched`` →) ``broadcast`` → ``confirmed``; or ``failed`` /
    ``cancelled``, whose hold is released."""

    PENDING = "pending"
    BATCHED = "batched"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BatchStatus(StrEnum):
    """``signing`` → ``signed`` → ``broadcast`` → ``confirmed``; ``abandoned`` (its withdrawals
    went back to ``pending``) or ``stuck`` (a person must look)."""

    SIGNING = "signing"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    ABANDONED = "abandoned"
    STUCK = "stuck"


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
    status: Mapped[WithdrawalStatus] = mapped_column(StrEnumType(WithdrawalStatus, 12))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("payout_batches.id"), index=True)
    txid: Mapped[str | None] = mapped_column(String(64))
    hold_id: Mapped[str] = mapped_column(String(128), unique=True)
    # Set when a store asked for it (a refund): its webhooks hear about the withdrawal.
    store_id: Mapped[str | None] = mapped_column(String(40))
    # A refund's store invoice: refunds of one invoice add up to at most what it received.
    invoice_id: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PayoutBatch(Base):
    __tablename__ = "payout_batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[BatchStatus] = mapped_column(StrEnumType(BatchStatus, 12))
    psbt: Mapped[str] = mapped_column(Text)
    txid: Mapped[str | None] = mapped_column(String(64))
    feerate_sat_vb: Mapped[int] = mapped_column(Integer)
    fee_sat: Mapped[int] = mapped_column(BigInteger)
    change_address_id: Mapped[int | None] = mapped_column(ForeignKey("onchain_addresses.id"))
    broadcast_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    broadcast_height: Mapped[int | None] = mapped_column(Integer)
    confirmed_height: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


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
