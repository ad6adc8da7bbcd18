"""Withdrawals held for approvers: holding one, approving, rejecting, expiring.

A withdrawal the policy holds keeps its ledger hold and waits in ``awaiting_approval``,
where neither the payout job (``pending`` only) nor the Lightning payer picks it up. Each
approver of the rule's group may approve once; the initiator never. The approval that
reaches N turns it ``pending`` (exactly once: the request row is locked, and the status
change is conditional) if it fits the withdrawal limits counting what the wallet withdrew
before this release (else that approval is refused and it keeps waiting), and from then on
it counts in their windows from its release. One rejection, or the deadline passing,
cancels it and voids its hold — the money is the wallet's again. Every decision is audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.errors import NotFound
from satvault.kyc.errors import WalletFrozen
from satvault.logs import get_logger
from satvault.payouts.events import emit_withdrawal
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.payouts.service import check_limits_at_release
from satvault.withdrawals.cancel import void_and_cancel
from satvault.withdrawals.policy._audit import record
from satvault.withdrawals.policy.core import Action, Decision
from satvault.withdrawals.policy.deciding import decide_for
from satvault.withdrawals.policy.errors import ApprovalClosed, NotAnApprover, WithdrawalBlocked
from satvault.withdrawals.policy.models import (
    ApprovalRequest,
    ApprovalStatus,
    ApproverGroupMember,
    WithdrawalApproval,
)

__all__ = ["ApprovalOutcome", "apply_decision", "approve_withdrawal", "awaiting",
           "expire_due", "refusal_of", "reject_withdrawal"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ApprovalOutcome:
    withdrawal_id: str
    method: WithdrawalMethod
    status: ApprovalStatus
    approvals: int
    required: int
    released: bool  # this call turned the withdrawal pending


def refusal_of(decision: Decision, version: int | None) -> WithdrawalBlocked:
    """The error refusing a withdrawal the policy blocks, or an internal payment it would
    hold for approvers: a payment of one of our own invoices settles in its transaction,
    there is no later moment to hold it at."""
    if decision.action is Action.BLOCK:
        return WithdrawalBlocked(f"the withdrawal policy blocks this withdrawal "
                                 f"({decision.reason}, version {version})")
    return WithdrawalBlocked(
        f"the withdrawal policy requires {decision.approvals} approval(s) for this payment "
        f"({decision.reason}), and payments of this platform's own invoices settle at "
        "once and cannot wait for approval")


async def apply_decision(session: AsyncSession, wd: Withdrawal, *, decision: Decision,
                         version: int | None, initiator: str | None,
                         settings: Settings) -> None:
    """Act on the policy's decision for ``wd`` (written, its hold placed, in the caller's
    unit of work). A block raises, so the unit of work rolls back and nothing stays held."""
    if decision.action is Action.ALLOW:
        return
    if decision.action is Action.BLOCK or wd.method == WithdrawalMethod.INTERNAL:
        log.info("withdrawal_blocked", wallet=wd.wallet_id, rule=decision.rule,
                 policy_version=version)
        raise refusal_of(decision, version)
    assert decision.group is not None
    now = utcnow()
    wd.status, wd.updated_at = WithdrawalStatus.AWAITING_APPROVAL, now
    session.add(ApprovalRequest(
        withdrawal_id=wd.id, status=ApprovalStatus.AWAITING, policy_version=version or 0,
        rule=decision.rule or "", group_name=decision.group, required=decision.approvals,
        initiator=initiator, created_at=now,
        expires_at=now + timedelta(seconds=settings.withdrawal_approval_ttl_seconds),
        decided_at=None))
    await session.flush()
    # withdrawal.created, written before the policy decided, said "pending".
    await emit_withdrawal(session, wd, "awaiting_approval")
    await record(session, actor=initiator or "unknown", action="withdrawal.approval_required",
                 subject=f"withdrawal:{wd.id}",
                 details={"rule": decision.rule, "policy_version": version,
                          "group": decision.group, "required": decision.approvals,
                          "amount_msat": wd.amount_msat, "method": str(wd.method)})


async def _refuse_outsider(session: AsyncSession, approver: str) -> None:
    """Someone who approves for no group is refused before any withdrawal is looked up (found
    from outside: "not awaiting approval" for an unknown id, "not an approver" for one that
    waits, told which ids wait)."""
    member = (await session.execute(select(ApproverGroupMember.group_name).where(
        ApproverGroupMember.user_id == approver).limit(1))).first()
    if member is None:
        raise NotAnApprover(f"{approver} is not an approver of any group")


async def _locked_request(session: AsyncSession, withdrawal_id: str) -> ApprovalRequest:
    req = (await session.execute(select(ApprovalRequest).where(
        ApprovalRequest.withdrawal_id == withdrawal_id).with_for_update())
    ).scalar_one_or_none()
    if req is None:
        raise NotFound(f"withdrawal {withdrawal_id!r} is not awaiting approval")
    if req.status != ApprovalStatus.AWAITING:
        raise ApprovalClosed(f"withdrawal {withdrawal_id} is {req.status}, no longer "
                             "awaiting approval")
    if req.expires_at <= utcnow():
        raise ApprovalClosed(f"the approval window of withdrawal {withdrawal_id} has closed "
                             "(it is being cancelled)")
    return req


async def _check_approver(session: AsyncSession, req: ApprovalRequest, approver: str) -> None:
    if req.initiator is not None and approver == req.initiator:
        raise NotAnApprover("the initiator of a withdrawal cannot approve or reject it")
    if await session.get(ApproverGroupMember, (req.group_name, approver)) is None:
        raise NotAnApprover(f"{approver} is not an approver of group {req.group_name!r}")


async def approve_withdrawal(session: AsyncSession, *, withdrawal_id: str, approver: str,
                             settings: Settings) -> ApprovalOutcome:
    """One approver's approval; the N-th releases the withdrawal to its payer (``pending``),
    if it fits the withdrawal limits beside what the wallet withdrew before the release
    (:func:`~satvault.payouts.service.check_limits_at_release`: refused otherwise, the
    approval not counted, so it is given again once the window has room). The caller wakes
    the Lightning payer when ``released`` and the method is Lightning."""
    await _refuse_outsider(session, approver)
    req = await _locked_request(session, withdrawal_id)
    await _check_approver(session, req, approver)
    wd = await session.get(Withdrawal, withdrawal_id)
    wallet = await session.get(Wallet, wd.wallet_id) if wd is not None else None
    if wallet is not None and wallet.frozen_at is not None:
        # Frozen while it waited for its approvers: nothing leaves it (it waits, held, until
        # the wallet is unfrozen, or a rejection returns the money).
        raise WalletFrozen(wallet.id, wallet.frozen_reason or "frozen by an operator")
    # The approvals that count: those of members of the group now (found from outside: an
    # approver removed from the group after approving still counted, and one current
    # member's approval released a 2-of-K withdrawal).
    members = select(ApproverGroupMember.user_id).where(
        ApproverGroupMember.group_name == req.group_name)
    before = set((await session.execute(select(WithdrawalApproval.approver).where(
        WithdrawalApproval.withdrawal_id == withdrawal_id,
        WithdrawalApproval.decision == "approve",
        WithdrawalApproval.approver.in_(members)))).scalars())
    if approver in before:
        raise ApprovalClosed(f"{approver} has approved withdrawal {withdrawal_id} already")
    now = utcnow()
    session.add(WithdrawalApproval(withdrawal_id=withdrawal_id, approver=approver,
                                   decision="approve", at=now))
    count = len(before) + 1
    released = False
    if count >= req.required:
        assert wd is not None and wallet is not None  # foreign keys
        await _still_allowed(session, req, wd, wallet=wallet, settings=settings)
        # It leaves now: it must fit the limits beside what left in the windows before.
        await check_limits_at_release(session, wd, wallet=wallet, settings=settings)
        res = await session.execute(update(Withdrawal).where(
            Withdrawal.id == withdrawal_id,
            Withdrawal.status == WithdrawalStatus.AWAITING_APPROVAL,
        ).values(status=WithdrawalStatus.PENDING, updated_at=now))
        released = res.rowcount == 1  # type: ignore[attr-defined]
        req.status, req.decided_at = ApprovalStatus.APPROVED, now
    await session.flush()
    wd = await session.get(Withdrawal, withdrawal_id, populate_existing=True)
    assert wd is not None
    if released:
        await emit_withdrawal(session, wd, "approved")
    await record(session, actor=approver, action="withdrawal.approved",
                 subject=f"withdrawal:{withdrawal_id}",
                 details={"approvals": count, "required": req.required,
                          "released": released, "group": req.group_name})
    return ApprovalOutcome(withdrawal_id, wd.method, req.status, count, req.required, released)


async def _still_allowed(session: AsyncSession, req: ApprovalRequest, wd: Withdrawal, *,
                         wallet: Wallet, settings: Settings) -> None:
    """Before the release: a policy made live since the withdrawal was held that now blocks
    it keeps it held (:class:`WithdrawalBlocked`; the approval not counted, a rejection
    returns the money). Found from outside: with withdrawals held, two admins made a
    block-everything policy live during an incident, and the approvers still released and
    paid the held ones. A newer policy that would allow it or hold it for approvers leaves
    it to the approvals it was held for."""
    version, decision = await decide_for(session, wd, wallet=wallet, bolt11=None,
                                         settings=settings)
    if version != req.policy_version and decision.action is Action.BLOCK:
        raise WithdrawalBlocked(
            f"the live withdrawal policy (version {version}) now blocks withdrawal {wd.id} "
            f"({decision.reason}): it stays held; reject it to return the money")


async def reject_withdrawal(session: AsyncSession, *, withdrawal_id: str, approver: str,
                            reason: str = "") -> ApprovalOutcome:
    """One approver's rejection cancels the withdrawal and releases its hold."""
    await _refuse_outsider(session, approver)
    req = await _locked_request(session, withdrawal_id)
    await _check_approver(session, req, approver)
    now = utcnow()
    session.add(WithdrawalApproval(withdrawal_id=withdrawal_id, approver=approver,
                                   decision="reject", at=now))
    wd = await session.get(Withdrawal, withdrawal_id, with_for_update=True)
    assert wd is not None and wd.status == WithdrawalStatus.AWAITING_APPROVAL
    await void_and_cancel(session, wd, why="rejected by an approver")
    req.status, req.decided_at = ApprovalStatus.REJECTED, now
    await session.flush()
    await record(session, actor=approver, action="withdrawal.rejected",
                 subject=f"withdrawal:{withdrawal_id}", details={"reason": reason[:500]})
    approvals = len((await session.execute(select(WithdrawalApproval.id).where(
        WithdrawalApproval.withdrawal_id == withdrawal_id,
        WithdrawalApproval.decision == "approve"))).all())
    return ApprovalOutcome(withdrawal_id, wd.method, req.status, approvals, req.required, False)


async def expire_due(session: AsyncSession, *, limit: int = 100) -> int:
    """Cancel withdrawals whose approval window has closed; their holds are released. One
    unit of work for up to ``limit`` of them (the periodic worker's step)."""
    now = utcnow()
    due = (await session.execute(select(ApprovalRequest).where(
        ApprovalRequest.status == ApprovalStatus.AWAITING, ApprovalRequest.expires_at <= now)
        .order_by(ApprovalRequest.expires_at).limit(limit).with_for_update(skip_locked=True))
    ).scalars().all()
    for req in due:
        wd = await session.get(Withdrawal, req.withdrawal_id, with_for_update=True)
        assert wd is not None
        if wd.status == WithdrawalStatus.AWAITING_APPROVAL:
            await void_and_cancel(session, wd, why="approval window expired")
        req.status, req.decided_at = ApprovalStatus.EXPIRED, now
        await record(session, actor="system", action="withdrawal.approval_expired",
                     subject=f"withdrawal:{req.withdrawal_id}",
                     details={"required": req.required, "expired_at": req.expires_at})
    await session.flush()
    if due:
        log.info("withdrawal_approvals_expired", count=len(due))
    return len(due)


async def awaiting(session: AsyncSession, *, limit: int = 100, approver: str | None = None
                   ) -> list[tuple[Withdrawal, ApprovalRequest, list[str]]]:
    """Withdrawals awaiting approval, oldest first, with who has approved so far; with
    ``approver``, only those held for a group of theirs (found from outside: an approver of
    one group saw every group's queue, destinations and amounts included)."""
    stmt = select(Withdrawal, ApprovalRequest).join(
        ApprovalRequest, ApprovalRequest.withdrawal_id == Withdrawal.id).where(
        ApprovalRequest.status == ApprovalStatus.AWAITING)
    if approver is not None:
        stmt = stmt.where(ApprovalRequest.group_name.in_(
            select(ApproverGroupMember.group_name).where(
                ApproverGroupMember.user_id == approver)))
    rows = (await session.execute(stmt.order_by(ApprovalRequest.created_at).limit(limit))).all()
    out = []
    for wd, req in rows:
        who = list((await session.execute(select(WithdrawalApproval.approver).where(
            WithdrawalApproval.withdrawal_id == wd.id,
            WithdrawalApproval.decision == "approve"))).scalars())
        out.append((wd, req, who))
    return out


