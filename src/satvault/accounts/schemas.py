"""API shapes for accounts and wallets. Amounts are integers in msat, never floats."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

__all__ = ["MeOut", "StatementLineOut", "StatementOut", "WalletOut"]


class MeOut(BaseModel):
    key_id: str
    owner_type: str
    owner_id: str
    scopes: list[str]
    wallets: list[str]


class WalletOut(BaseModel):
    id: str
    owner_type: str
    owner_id: str
    asset: str
    unit: str
    available_msat: int
    posted_msat: int
    incoming_msat: int
    held_msat: int
    # Deposits the risk rules held back (satvault.accounts.frozen): owed, not spendable, not
    # in available_msat or posted_msat; a case releases them (or not).
    frozen_msat: int = 0
    # KYC (satvault.kyc): the owner's tier, the freeze, per rail the limits and what is left.
    kyc_tier: int | None = None
    frozen: bool = False
    frozen_reason: str | None = None
    limits: dict[str, dict[str, int]] | None = None


class StatementLineOut(BaseModel):
    seq: int
    transfer_id: str
    kind: str
    direction: str
    amount_msat: int
    code: str
    ref: str
    hold_state: str | None
    created_at: datetime
    balance_msat: int
    available_msat: int


class StatementOut(BaseModel):
    wallet_id: str
    items: list[StatementLineOut]
    next_cursor: str | None
