"""API shapes for the withdrawal policy: approvals, the allow-list, policy versions, approver
group changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from satvault.web.fields import STRICT_BODY, SingleLine

__all__ = ["AllowlistIn", "AllowlistOut", "ApprovalOut", "AwaitingOut", "GroupChangeIn",
           "GroupChangeOut", "PolicyIn", "PolicyOut", "RejectIn"]


class AwaitingOut(BaseModel):
    withdrawal_id: str
    wallet_id: str
    method: str
    destination: str
    amount_msat: int
    rule: str
    policy_version: int
    group: str
    required: int
    approved_by: list[str]
    initiator: str | None
    created_at: datetime
    expires_at: datetime


class ApprovalOut(BaseModel):
    withdrawal_id: str
    status: str = Field(description="awaiting, approved (released to its payer) or rejected")
    approvals: int
    required: int


class RejectIn(BaseModel):
    model_config = STRICT_BODY
    reason: str = Field(default="", max_length=500)


class AllowlistIn(BaseModel):
    model_config = STRICT_BODY
    destination: str = Field(min_length=1, max_length=2000, description=(
        "A Bitcoin address, a Lightning node id (66 hex digits), an LNURL or a Lightning "
        "Address."))
    label: SingleLine = Field(default="", max_length=120)


class AllowlistOut(BaseModel):
    id: str
    wallet_id: str
    destination: str
    kind: str
    label: str
    created_at: datetime
    usable_after: datetime = Field(description="The entry counts only from then on "
                                               "(the cool-down).")


class PolicyIn(BaseModel):
    model_config = STRICT_BODY
    rules: list[dict[str, Any]]


class PolicyOut(BaseModel):
    version: int
    status: str
    rules: list[dict[str, Any]]
    proposed_by: str
    proposed_at: datetime
    approved_by: str | None
    approved_at: datetime | None


class GroupChangeIn(BaseModel):
    model_config = STRICT_BODY
    group: str = Field(min_length=1, max_length=60, description="The approver group "
                                                                "(created when a first member "
                                                                "is added).")
    user_id: str = Field(min_length=1, max_length=40, description="The user (usr_…).")
    action: Literal["add", "remove"]


class GroupChangeOut(BaseModel):
    id: str
    group: str
    user_id: str
    action: str = Field(description="add or remove")
    status: str = Field(description="pending (until a second admin decides), approved "
                                    "(applied) or rejected")
    proposed_by: str
    decided_by: str | None
    reason: str
    created_at: datetime
    decided_at: datetime | None
