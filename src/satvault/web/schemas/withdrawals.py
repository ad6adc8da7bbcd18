"""API shapes for withdrawals. Amounts are integer msat."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from satvault.web.fields import STRICT_BODY, Msat

__all__ = ["CancelIn", "WithdrawalIn", "WithdrawalOut"]


class WithdrawalIn(BaseModel):
    model_config = STRICT_BODY
    destination: str = Field(min_length=1, max_length=2000,
                             description="A Bitcoin address or a BIP21 URI.")
    amount_msat: Msat | None = Field(default=None, description="Required unless the BIP21 URI "
                                    "carries an amount. On-chain: a multiple of 1000.")


class WithdrawalOut(BaseModel):
    id: str
    wallet_id: str
    method: str
    status: str
    destination: str
    amount_msat: int
    fee_reserve_msat: int
    fee_msat: int | None
    txid: str | None
    payment_hash: str | None = None
    failure_reason: str | None = None
    invoice_id: str | None = Field(
        default=None, description="The store invoice this withdrawal refunds, if it is a refund.")
    created_at: datetime
    updated_at: datetime


class CancelIn(BaseModel):
    model_config = STRICT_BODY
    reason: str = Field(default="", max_length=500,
                        description="Why (kept in the audit log).")
