"""API shapes for deposits. Amounts are integer msat."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from satvault.web.fields import STRICT_BODY, Memo, Msat

__all__ = ["DepositIn", "DepositOut", "DepositPaymentOut"]


class DepositIn(BaseModel):
    model_config = STRICT_BODY
    method: Literal["onchain", "lightning"] = "onchain"
    amount_msat: Annotated[Msat | None, Field(ge=1000)] = None
    description: Annotated[Memo, Field(max_length=256)] = ""


class DepositPaymentOut(BaseModel):
    txid: str
    vout: int
    amount_msat: int
    confirmations: int
    status: str
    credited: bool


class DepositOut(BaseModel):
    id: str
    wallet_id: str
    method: str
    status: str
    amount_msat: int | None
    description: str
    address: str | None = Field(description="On-chain deposits: the fresh address.")
    bip21: str | None = Field(description="On-chain: the BIP21 URI.")
    bolt11: str | None = Field(default=None, description="Lightning: the BOLT11 invoice.")
    payment_hash: str | None = None
    qr_svg: str
    qr_png: str
    required_confirmations: int
    received_msat: int
    pending_msat: int
    payments: list[DepositPaymentOut]
    created_at: datetime
    expires_at: datetime | None
