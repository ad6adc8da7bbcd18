"""API shapes of the proof of liabilities: the round's root and a wallet's proof, exactly as
published in ``root.json`` and ``proofs/<wallet>.json`` (docs/custody.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["LiabilitiesProofOut", "LiabilityLeafOut", "LiabilityProofOut", "LiabilityRootOut",
           "LiabilityStepOut"]

Hex32 = Field(pattern=r"^[0-9a-f]{64}$", description="32 bytes, lower-case hex")


class LiabilityRootOut(BaseModel):
    root: str = Hex32
    total_msat: int = Field(ge=0, description="What the platform owes all its customers.")
    height: int = Field(ge=0, description="The block height the balances were read at.")
    leaves: int = Field(ge=1, description="The padded bottom level's size (a power of two).")


class LiabilityStepOut(BaseModel):
    hash: str = Hex32
    sum: int = Field(ge=0)
    side: Literal["left", "right"] = Field(description="Where this sibling sits.")


class LiabilityLeafOut(BaseModel):
    index: int = Field(ge=0, description="The leaf's 0-based position in the bottom level.")
    nonce: str = Hex32
    balance_msat: int = Field(ge=0)
    path: list[LiabilityStepOut] = Field(description="From the leaf up to the root.")


class LiabilityProofOut(BaseModel):
    account: str = Field(description="The wallet id.")
    height: int = Field(ge=0)
    balance_msat: int = Field(ge=0, description="The wallet's posted balance at that height: "
                                                 "the sum of its leaves.")
    leaves: list[LiabilityLeafOut]


class LiabilitiesProofOut(BaseModel):
    round_id: str
    published_at: datetime
    root: LiabilityRootOut
    proof: LiabilityProofOut
