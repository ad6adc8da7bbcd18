"""Withdrawal policy endpoints: the approvers' queue (list, approve, reject), a wallet's
destination allow-list, the policy's versions (propose, approve by a second admin), and the
approver groups' members (a member added or removed is proposed by one admin and applied
when a second approves it).

Approvers act with an API key of their own user (a ``user`` key with the ``admin`` or
``withdrawals:write`` scope; an approval, which releases money, needs ``withdrawals:write``,
which an admin's API key holds and an access token only after a step-up); whether they may
approve a given withdrawal is the service's question (member of the rule's group, not its
initiator). Policy changes need an ``admin`` key of an admin user.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy import select

from satvault.accounts.access import held_wallet, visible_wallet
from satvault.accounts.service import Principal
from satvault.kernel.errors import Forbidden
from satvault.kernel.retrying import retrying
from satvault.payouts.models import WithdrawalMethod
from satvault.web.deps import SessionDep, SettingsDep, require_any_scope, require_scope, user_of
from satvault.web.openapi import problem_responses
from satvault.web.schemas.approvals import (
    AllowlistIn,
    AllowlistOut,
    ApprovalOut,
    AwaitingOut,
    GroupChangeIn,
    GroupChangeOut,
    PolicyIn,
    PolicyOut,
    RejectIn,
)
from satvault.web.state import payer_wake_of, sessions_of, settings_of
from satvault.withdrawals.policy import approvals, service
from satvault.withdrawals.policy.models import (
    AllowlistEntry,
    ApproverGroupChange,
    ApproverGroupMember,
    PolicyVersion,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["withdrawal policy"],
                   responses=problem_responses(403, 404, 409, 422))
Approver = Annotated[Principal, Depends(require_any_scope("admin", "withdrawals:write"))]
# An approval releases money: the money scope, which an admin's access token carries only
# after a step-up (found from outside: a plain ``admin`` token approved withdrawals, where
# the same person's token could not have withdrawn).
Releaser = Annotated[Principal, Depends(require_scope("withdrawals:write"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]
Reader = Annotated[Principal, Depends(require_scope("wallet:read"))]
Writer = Annotated[Principal, Depends(require_scope("withdrawals:write"))]


def _user(principal: Principal) -> str:
    return user_of(principal, "approvals and policy changes")


@router.get("/admin/withdrawals/awaiting-approval", response_model=list[AwaitingOut])
async def list_awaiting(session: SessionDep, principal: Approver) -> list[AwaitingOut]:
    """Withdrawals held for approvers, oldest first: every one for an admin, those of the
    caller's groups for an approver."""
    user = _user(principal)
    if not principal.is_admin and (await session.execute(select(ApproverGroupMember).where(
            ApproverGroupMember.user_id == user).limit(1))).first() is None:
        raise Forbidden("only admins and approvers see withdrawals awaiting approval")
    return [AwaitingOut(withdrawal_id=wd.id, wallet_id=wd.wallet_id, method=wd.method,
                        destination=wd.destination, amount_msat=wd.amount_msat, rule=req.rule,
                        policy_version=req.policy_version, group=req.group_name,
                        required=req.required, approved_by=who, initiator=req.initiator,
                        created_at=wd.created_at, expires_at=req.expires_at)
            for wd, req, who in await approvals.awaiting(
                session, approver=None if principal.is_admin else user)]


@router.post("/admin/withdrawals/{withdrawal_id}/approve", response_model=ApprovalOut)
async def approve(withdrawal_id: str, request: Request, principal: Releaser) -> ApprovalOut:
    """One approval; the last one needed releases the withdrawal to its payer."""
    # Its own unit of work, committed before the payer is woken (it must find it pending);
    # run again on a deadlock or a serialisation failure (concurrent decisions on one wallet).
    outcome = await retrying(sessions_of(request), lambda session: approvals.approve_withdrawal(
        session, withdrawal_id=withdrawal_id, approver=_user(principal),
        settings=settings_of(request)))
    if outcome.released and outcome.method == WithdrawalMethod.LIGHTNING:
        wake = payer_wake_of(request)
        if wake is not None:
            wake.set()
    return ApprovalOut(withdrawal_id=withdrawal_id, status=outcome.status,
                       approvals=outcome.approvals, required=outcome.required)


@router.post("/admin/withdrawals/{withdrawal_id}/reject", response_model=ApprovalOut)
async def reject(withdrawal_id: str, request: Request, principal: Approver,
                 body: RejectIn | None = None) -> ApprovalOut:
    reason = (body or RejectIn()).reason
    # Found from outside: a rejection voids the hold before its status change takes the
    # wallet's roll-up lock, a release takes them the other way round, and PostgreSQL broke
    # the deadlock by aborting the rejection (a 500, the decision lost). Run again instead.
    outcome = await retrying(sessions_of(request), lambda session: approvals.reject_withdrawal(
        session, withdrawal_id=withdrawal_id, approver=_user(principal), reason=reason))
    return ApprovalOut(withdrawal_id=withdrawal_id, status=outcome.status,
                       approvals=outcome.approvals, required=outcome.required)


def _entry(e: AllowlistEntry) -> AllowlistOut:
    return AllowlistOut(id=e.id, wallet_id=e.wallet_id, destination=e.destination,
                        kind=e.kind, label=e.label, created_at=e.created_at,
                        usable_after=e.usable_after)


@router.get("/wallets/{wallet_id}/allowlist", response_model=list[AllowlistOut])
async def list_allowlist(wallet_id: str, session: SessionDep, principal: Reader
                         ) -> list[AllowlistOut]:
    await visible_wallet(session, principal, wallet_id)
    return [_entry(e) for e in await service.list_allowlist(session, wallet_id=wallet_id)]


@router.post("/wallets/{wallet_id}/allowlist", response_model=AllowlistOut, status_code=201)
async def add_allowlist(wallet_id: str, body: AllowlistIn, session: SessionDep,
                        settings: SettingsDep, principal: Writer) -> AllowlistOut:
    """Add a destination; it counts only after the cool-down (``usable_after``). Its
    holder's (an admin may remove an entry, not add one: see satvault.accounts.access)."""
    wallet = await held_wallet(session, principal, wallet_id)
    actor = await service.initiator_of_principal(session, principal)
    return _entry(await service.add_allowlist_entry(
        session, wallet=wallet, destination=body.destination, label=body.label,
        actor=actor or f"{principal.owner_type}:{principal.owner_id}", settings=settings))


@router.delete("/wallets/{wallet_id}/allowlist/{entry_id}", status_code=204)
async def remove_allowlist(wallet_id: str, entry_id: str, session: SessionDep,
                           principal: Writer) -> Response:
    await visible_wallet(session, principal, wallet_id)
    actor = await service.initiator_of_principal(session, principal)
    await service.remove_allowlist_entry(
        session, wallet_id=wallet_id, entry_id=entry_id,
        actor=actor or f"{principal.owner_type}:{principal.owner_id}")
    return Response(status_code=204)


def _policy(p: PolicyVersion) -> PolicyOut:
    return PolicyOut(version=p.version, status=p.status, rules=json.loads(p.rules)["rules"],
                     proposed_by=p.proposed_by, proposed_at=p.proposed_at,
                     approved_by=p.approved_by, approved_at=p.approved_at)


@router.get("/admin/withdrawal-policy", response_model=list[PolicyOut])
async def list_policy(session: SessionDep, _admin: Admin) -> list[PolicyOut]:
    """Every version, newest first; the one with status ``live`` applies."""
    return [_policy(p) for p in await service.policy_versions(session)]


@router.post("/admin/withdrawal-policy", response_model=PolicyOut, status_code=201)
async def propose(body: PolicyIn, session: SessionDep, principal: Admin) -> PolicyOut:
    """Propose a new version; it applies once a different admin approves it."""
    return _policy(await service.propose_policy(session, admin=_user(principal),
                                                raw={"rules": body.rules}))


@router.post("/admin/withdrawal-policy/{version}/approve", response_model=PolicyOut)
async def approve_policy(
    version: Annotated[int, Path(ge=1, le=2**31 - 1, description="A proposed version.")],
    session: SessionDep, principal: Admin,
) -> PolicyOut:
    return _policy(await service.approve_policy(session, admin=_user(principal),
                                                version=version))


@router.post("/admin/withdrawal-policy/{version}/reject", response_model=PolicyOut)
async def reject_policy(
    version: Annotated[int, Path(ge=1, le=2**31 - 1, description="A proposed version.")],
    session: SessionDep, principal: Admin,
) -> PolicyOut:
    """Withdraw a proposed version that never applies; like an approval, not by its
    proposer."""
    return _policy(await service.reject_policy(session, admin=_user(principal),
                                               version=version))


def _change(c: ApproverGroupChange) -> GroupChangeOut:
    return GroupChangeOut(id=c.id, group=c.group_name, user_id=c.user_id, action=c.action,
                          status=c.status, proposed_by=c.proposed_by, decided_by=c.decided_by,
                          reason=c.reason, created_at=c.created_at, decided_at=c.decided_at)


ChangeId = Annotated[str, Path(min_length=1, max_length=40,
                               description="A pending approver group change (agc_…).")]


@router.get("/admin/approver-groups/changes", response_model=list[GroupChangeOut])
async def list_group_changes(session: SessionDep, _admin: Admin,
                             pending: bool = True) -> list[GroupChangeOut]:
    """The changes waiting for a second admin, oldest first (``pending=false``: every
    change, newest first)."""
    rows = await (service.pending_group_changes(session) if pending
                  else service.group_changes(session))
    return [_change(c) for c in rows]


@router.post("/admin/approver-groups/changes", response_model=GroupChangeOut,
             status_code=201)
async def propose_group_change(body: GroupChangeIn, session: SessionDep,
                               principal: Admin) -> GroupChangeOut:
    """Propose adding a member to a group or removing one; it applies once a different
    admin approves it."""
    return _change(await service.propose_group_change(
        session, admin=_user(principal), group=body.group, user_id=body.user_id,
        action=body.action))


@router.post("/admin/approver-groups/changes/{change_id}/approve",
             response_model=GroupChangeOut)
async def approve_group_change(change_id: ChangeId, session: SessionDep,
                               principal: Admin) -> GroupChangeOut:
    """Approve a pending change (not by its proposer): the member is added or removed now."""
    return _change(await service.approve_group_change(session, admin=_user(principal),
                                                      change_id=change_id))


@router.post("/admin/approver-groups/changes/{change_id}/reject",
             response_model=GroupChangeOut)
async def reject_group_change(change_id: ChangeId, session: SessionDep, principal: Admin,
                              body: RejectIn | None = None) -> GroupChangeOut:
    """Reject a pending change: it never applies (not by its proposer either)."""
    return _change(await service.reject_group_change(
        session, admin=_user(principal), change_id=change_id,
        reason=body.reason if body is not None else ""))
