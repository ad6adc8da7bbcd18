"""The withdrawal policy in the database: its versions (propose → approve by a second admin),
the approver groups (a member added or removed the same way: propose → approve by a second
admin, applied then), each wallet's allow-list, who initiated a withdrawal, and the decision
for one withdrawal (:func:`decide_for`).

Functions take a session and plain values and never commit.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, Store, User, Wallet
from satvault.accounts.service import Principal
from satvault.config import Settings
from satvault.db import one_at_a_time, utcnow
from satvault.kernel.errors import AlreadyExists, InvalidInput, NotFound
from satvault.kernel.ids import new_id
from satvault.kernel.text import one_line
from satvault.onchain.addresses import parse_address
from satvault.onchain.errors import OnchainError
from satvault.payouts.models import Withdrawal, WithdrawalMethod
from satvault.withdrawals.policy import core
from satvault.withdrawals.policy._audit import record
from satvault.withdrawals.policy.approvals import apply_decision, refusal_of
from satvault.withdrawals.policy.deciding import (
    UNREAD,
    LivePolicy,
    decide_for,
    destination_keys,
    live_columns,
    live_from,
    live_policy,
)
from satvault.withdrawals.policy.errors import ApprovalClosed, InvalidPolicy, NotAnApprover
from satvault.withdrawals.policy.models import (
    AllowlistEntry,
    ApproverGroup,
    ApproverGroupChange,
    ApproverGroupMember,
    ChangeAction,
    ChangeStatus,
    PolicyStatus,
    PolicyVersion,
)

__all__ = ["LivePolicy", "add_allowlist_entry", "approve_group_change", "approve_policy",
           "check_internal", "decide_for", "destination_keys", "group_changes",
           "group_members", "initiator_of", "initiator_of_principal", "list_allowlist",
           "live_columns", "live_from", "live_policy", "normalise_entry",
           "pending_group_changes", "policy_versions", "propose_group_change",
           "propose_policy", "refuse_internal_early", "reject_group_change", "reject_policy",
           "remove_allowlist_entry"]

_NODE_HEX = frozenset("0123456789abcdef")

_APPROVALS_KEY = 0x5A7A_0062  # satvault.db.one_at_a_time: approvals of policy versions


# --------------------------------------------------------------------------- versions


async def _admin(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None or not user.is_admin:
        raise NotAnApprover(f"{user_id!r} is not an admin user")
    return user


async def propose_policy(session: AsyncSession, *, admin: str, raw: Any) -> PolicyVersion:
    """A new version, ``proposed`` until a different admin approves it."""
    policy = core.parse_policy(raw)
    await _admin(session, admin)
    version = int((await session.execute(
        select(func.coalesce(func.max(PolicyVersion.version), 0)))).scalar_one()) + 1
    row = PolicyVersion(version=version, status=PolicyStatus.PROPOSED,
                        rules=policy.canonical(), proposed_by=admin, proposed_at=utcnow(),
                        approved_by=None, approved_at=None)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise AlreadyExists("another policy version was proposed at the same time; "
                            "propose again") from exc
    await record(session, actor=admin, action="withdrawal_policy.proposed",
                 subject=f"withdrawal_policy:{version}",
                 details={"rules": json.loads(row.rules)})
    return row


async def approve_policy(session: AsyncSession, *, admin: str, version: int) -> PolicyVersion:
    """Make a proposed version live (the previous live one is superseded). The approving
    admin must not be the one who proposed it. Approvals run one at a time, so two of
    different versions at once make the later one live after the earlier
    (:func:`satvault.db.one_at_a_time`)."""
    await _admin(session, admin)
    await one_at_a_time(session, _APPROVALS_KEY)
    row = (await session.execute(select(PolicyVersion).where(
        PolicyVersion.version == version).with_for_update())).scalar_one_or_none()
    if row is None:
        raise NotFound(f"policy version {version} not found")
    if row.status != PolicyStatus.PROPOSED:
        raise InvalidPolicy(f"policy version {version} is {row.status}, not proposed")
    if row.proposed_by == admin:
        raise NotAnApprover("a policy change needs a second admin: the proposer cannot "
                            "approve it")
    live = await live_policy(session)
    if live is not None and live[0] > version:
        # Found from outside: approving it made it live over the newer version, undoing a
        # later decision unseen.
        raise InvalidPolicy(f"policy version {version} was proposed before version "
                            f"{live[0]}, which is live now: propose it again to replace it")
    previous = (await session.execute(update(PolicyVersion).where(
        PolicyVersion.status == PolicyStatus.LIVE).values(status=PolicyStatus.SUPERSEDED)
        .returning(PolicyVersion.version))).scalars().all()
    row.status, row.approved_by, row.approved_at = PolicyStatus.LIVE, admin, utcnow()
    await session.flush()
    await record(session, actor=admin, action="withdrawal_policy.approved",
                 subject=f"withdrawal_policy:{version}",
                 details={"proposed_by": row.proposed_by, "superseded": list(previous)})
    return row


async def reject_policy(session: AsyncSession, *, admin: str, version: int,
                        reason: str = "") -> PolicyVersion:
    """Withdraw a proposed version without it ever applying. The decision is a second
    admin's, as an approval is: the proposer cannot make it."""
    await _admin(session, admin)
    row = (await session.execute(select(PolicyVersion).where(
        PolicyVersion.version == version).with_for_update())).scalar_one_or_none()
    if row is None:
        raise NotFound(f"policy version {version} not found")
    if row.status != PolicyStatus.PROPOSED:
        raise InvalidPolicy(f"policy version {version} is {row.status}, not proposed")
    if row.proposed_by == admin:
        raise NotAnApprover("a policy change is decided by a second admin: the proposer "
                            "cannot reject it")
    row.status = PolicyStatus.WITHDRAWN
    await session.flush()
    await record(session, actor=admin, action="withdrawal_policy.rejected",
                 subject=f"withdrawal_policy:{version}",
                 details={"proposed_by": row.proposed_by, "reason": reason[:500]})
    return row


async def policy_versions(session: AsyncSession) -> list[PolicyVersion]:
    return list((await session.execute(select(PolicyVersion).order_by(
        PolicyVersion.version.desc()))).scalars())


# ----------------------------------------------------------------------------- groups


async def _apply_add(session: AsyncSession, *, group: str, user_id: str,
                     change: ApproverGroupChange) -> None:
    """Make ``user_id`` an approver of ``group`` (created on first use). Only the approval of
    a change (:func:`approve_group_change`) calls it."""
    if await session.get(ApproverGroup, group) is None:
        session.add(ApproverGroup(name=group, created_at=utcnow()))
        await session.flush()
    if await session.get(ApproverGroupMember, (group, user_id)) is not None:
        return
    session.add(ApproverGroupMember(group_name=group, user_id=user_id, added_at=utcnow()))
    await session.flush()
    await record(session, actor=change.decided_by or "unknown",
                 action="approver_group.member_added", subject=f"approver_group:{group}",
                 details={"user_id": user_id, "change": change.id,
                          "proposed_by": change.proposed_by})


async def _apply_remove(session: AsyncSession, *, group: str, user_id: str,
                        change: ApproverGroupChange) -> None:
    gone = (await session.execute(delete(ApproverGroupMember).where(
        ApproverGroupMember.group_name == group, ApproverGroupMember.user_id == user_id)
    )).rowcount  # type: ignore[attr-defined]
    if gone:
        await record(session, actor=change.decided_by or "unknown",
                     action="approver_group.member_removed", subject=f"approver_group:{group}",
                     details={"user_id": user_id, "change": change.id,
                              "proposed_by": change.proposed_by})


async def propose_group_change(session: AsyncSession, *, admin: str, group: str,
                               user_id: str, action: str) -> ApproverGroupChange:
    """Propose adding ``user_id`` to ``group`` (``action="add"``) or removing them
    (``"remove"``); nothing changes until a different admin approves it."""
    await _admin(session, admin)
    group = one_line(group.strip(), "a group name")  # shown to approvers, named by rules
    if not group or len(group) > 60:
        raise InvalidInput("a group name has 1 to 60 characters")
    try:
        act = ChangeAction(action)
    except ValueError:
        raise InvalidInput("a group change adds or removes a member") from None
    if await session.get(User, user_id) is None:
        raise NotFound(f"user {user_id!r} not found")
    member = await session.get(ApproverGroupMember, (group, user_id)) is not None
    if act == ChangeAction.ADD and member:
        raise AlreadyExists(f"{user_id!r} is an approver of {group!r} already")
    if act == ChangeAction.REMOVE and not member:
        raise NotFound(f"{user_id!r} is not an approver of {group!r}")
    pending = (await session.execute(select(ApproverGroupChange.id).where(
        ApproverGroupChange.group_name == group, ApproverGroupChange.user_id == user_id,
        ApproverGroupChange.status == ChangeStatus.PENDING))).first()
    if pending is not None:
        raise AlreadyExists(f"a change of {user_id!r} in {group!r} is pending already "
                            f"({pending[0]})")
    row = ApproverGroupChange(id=new_id("agc"), group_name=group, user_id=user_id,
                              action=act, status=ChangeStatus.PENDING, proposed_by=admin,
                              decided_by=None, reason="", created_at=utcnow(),
                              decided_at=None)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise AlreadyExists(f"a change of {user_id!r} in {group!r} was proposed at the same "
                            "time") from exc
    await record(session, actor=admin, action="approver_group.change_proposed",
                 subject=f"approver_group:{group}",
                 details={"change": row.id, "user_id": user_id, "action": str(act)})
    return row


async def _decide(session: AsyncSession, *, admin: str, change_id: str,
                  status: ChangeStatus, reason: str) -> ApproverGroupChange:
    """Lock the pending change, refuse its proposer, and move it to ``status`` — by a
    compare-and-set on ``pending`` as well, so of two decisions racing (SQLite has no row
    lock) only one applies."""
    await _admin(session, admin)
    row = (await session.execute(select(ApproverGroupChange).where(
        ApproverGroupChange.id == change_id).with_for_update()
        .execution_options(populate_existing=True))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"approver group change {change_id!r} not found")
    if row.status != ChangeStatus.PENDING:
        raise ApprovalClosed(f"approver group change {change_id} is {row.status}, "
                             "not pending")
    if row.proposed_by == admin:
        raise NotAnApprover("an approver group change needs a second admin: the proposer "
                            "cannot approve or reject it")
    now = utcnow()
    won = (await session.execute(update(ApproverGroupChange).where(
        ApproverGroupChange.id == change_id,
        ApproverGroupChange.status == ChangeStatus.PENDING).values(
            status=status, decided_by=admin, decided_at=now, reason=reason[:500])
        .execution_options(synchronize_session=False))).rowcount  # type: ignore[attr-defined]
    if won != 1:
        raise ApprovalClosed(f"approver group change {change_id} was decided meanwhile")
    row.status, row.decided_by, row.decided_at, row.reason = status, admin, now, reason[:500]
    return row


async def approve_group_change(session: AsyncSession, *, admin: str, change_id: str
                               ) -> ApproverGroupChange:
    """Approve a pending change (by an admin other than its proposer) and apply it in this
    unit of work: the member is added (the group created on first use) or removed."""
    row = await _decide(session, admin=admin, change_id=change_id,
                        status=ChangeStatus.APPROVED, reason="")
    await record(session, actor=admin, action="approver_group.change_approved",
                 subject=f"approver_group:{row.group_name}",
                 details={"change": row.id, "user_id": row.user_id,
                          "action": str(row.action), "proposed_by": row.proposed_by})
    apply = _apply_add if row.action == ChangeAction.ADD else _apply_remove
    await apply(session, group=row.group_name, user_id=row.user_id, change=row)
    return row


async def reject_group_change(session: AsyncSession, *, admin: str, change_id: str,
                              reason: str = "") -> ApproverGroupChange:
    """Reject a pending change: it never applies. Like an approval, not by its proposer."""
    row = await _decide(session, admin=admin, change_id=change_id,
                        status=ChangeStatus.REJECTED, reason=reason)
    await record(session, actor=admin, action="approver_group.change_rejected",
                 subject=f"approver_group:{row.group_name}",
                 details={"change": row.id, "user_id": row.user_id,
                          "action": str(row.action), "proposed_by": row.proposed_by,
                          "reason": reason[:500]})
    return row


async def pending_group_changes(session: AsyncSession) -> list[ApproverGroupChange]:
    """The changes waiting for a second admin, oldest first."""
    return list((await session.execute(select(ApproverGroupChange).where(
        ApproverGroupChange.status == ChangeStatus.PENDING).order_by(
            ApproverGroupChange.created_at, ApproverGroupChange.id))).scalars())


async def group_changes(session: AsyncSession, *, limit: int = 100
                        ) -> list[ApproverGroupChange]:
    """Every change, newest first (at most ``limit``)."""
    return list((await session.execute(select(ApproverGroupChange).order_by(
        ApproverGroupChange.created_at.desc(), ApproverGroupChange.id.desc()).limit(limit)
    )).scalars())


async def group_members(session: AsyncSession) -> list[tuple[str, str]]:
    """(group, user id) of every approver, by group."""
    return [(g, u) for g, u in (await session.execute(select(
        ApproverGroupMember.group_name, ApproverGroupMember.user_id).order_by(
            ApproverGroupMember.group_name, ApproverGroupMember.user_id))).all()]


# ----------------------------------------------------------------------------- callers


async def initiator_of(session: AsyncSession, *, owner_type: str, owner_id: str
                       ) -> str | None:
    """The user behind an API key: the user itself; for a merchant's or a store's key, the
    merchant's owner (None if the merchant has none — then no approver is excluded as the
    initiator, and every approval still comes from a group member)."""
    if owner_type == "user":
        return owner_id
    if owner_type == "merchant":
        return (await session.execute(select(Merchant.owner_user_id).where(
            Merchant.id == owner_id))).scalar_one_or_none()
    if owner_type == "store":
        return (await session.execute(select(Merchant.owner_user_id).join(
            Store, Store.merchant_id == Merchant.id).where(Store.id == owner_id))
        ).scalar_one_or_none()
    return None


async def initiator_of_principal(session: AsyncSession, principal: Principal) -> str | None:
    """The user behind a caller: the person holding the credential when it names one (an
    access token, also one acting for a merchant: its user, not the merchant's owner, who
    may be somebody else or nobody), else :func:`initiator_of` its key's owner."""
    if principal.user_id is not None:
        return principal.user_id
    return await initiator_of(session, owner_type=principal.owner_type,
                              owner_id=principal.owner_id)


# ------------------------------------------------------------------------- allow-list


def normalise_entry(destination: str, network: str) -> tuple[str, str]:
    """(kind, normalised text) of an allow-list entry: an on-chain address (or a BIP21 URI's
    address), a Lightning node id (66 hex digits), or an LNURL / Lightning Address."""
    text = destination.strip()
    low = text.lower()
    if low.startswith("lightning:"):
        low = low[len("lightning:"):]
    if len(low) == 66 and set(low) <= _NODE_HEX:
        return "node", low
    if low.startswith(("lnurl", "lnurlp://")) or ("@" in low and "." in low.split("@")[-1]):
        return "lnurl", low
    if low.startswith("bitcoin:"):
        text = text[len("bitcoin:"):].split("?", 1)[0]
    try:
        return "address", parse_address(text, network).address
    except OnchainError as exc:
        raise InvalidPolicy(f"not an address, node id, LNURL or Lightning Address: {exc}"
                            ) from None


async def add_allowlist_entry(session: AsyncSession, *, wallet: Wallet, destination: str,
                              label: str, actor: str | None, settings: Settings
                              ) -> AllowlistEntry:
    """Add a destination; it counts as allow-listed only after the cool-down."""
    kind, text = normalise_entry(destination, settings.network)
    label = one_line(label.strip(), "a label")  # the admin console's form too
    exists = (await session.execute(select(AllowlistEntry.id).where(
        AllowlistEntry.wallet_id == wallet.id, AllowlistEntry.destination == text))).first()
    if exists is not None:
        raise AlreadyExists("this destination is on the wallet's allow-list already")
    now = utcnow()
    entry = AllowlistEntry(id=new_id("alw"), wallet_id=wallet.id, destination=text, kind=kind,
                           label=label[:120], added_by=actor, created_at=now,
                           usable_after=now + timedelta(
                               seconds=settings.withdrawal_allowlist_cooldown_seconds))
    session.add(entry)
    await session.flush()
    await record(session, actor=actor or "unknown", action="allowlist.added",
                 subject=f"wallet:{wallet.id}",
                 details={"entry": entry.id, "destination": text, "kind": kind,
                          "usable_after": entry.usable_after.isoformat()})
    return entry


async def list_allowlist(session: AsyncSession, *, wallet_id: str) -> list[AllowlistEntry]:
    return list((await session.execute(select(AllowlistEntry).where(
        AllowlistEntry.wallet_id == wallet_id).order_by(AllowlistEntry.created_at))).scalars())


async def remove_allowlist_entry(session: AsyncSession, *, wallet_id: str, entry_id: str,
                                 actor: str | None) -> None:
    entry = await session.get(AllowlistEntry, entry_id)
    if entry is None or entry.wallet_id != wallet_id:
        raise NotFound(f"allow-list entry {entry_id!r} not found")
    await session.delete(entry)
    await session.flush()
    await record(session, actor=actor or "unknown", action="allowlist.removed",
                 subject=f"wallet:{wallet_id}",
                 details={"entry": entry_id, "destination": entry.destination})


# ---------------------------------------------------------------------------- decision


def refuse_internal_early(live: LivePolicy, *, wallet: Wallet, amount_msat: int) -> None:
    """Before an internal payment of ``amount_msat`` from ``wallet`` takes the payee's invoice
    off the node: the live policy's decision when its rules on the payment alone decide it
    (:func:`core.decide_known`), refused as :func:`check_internal` would refuse it in the
    unit of work (raises). Pure: ``live`` was read already. A rule on window sums or the
    allow-list ahead of the deciding one leaves it to :func:`check_internal`."""
    if live is None or not live[1].rules:
        return
    version, policy = live
    decision = core.decide_known(policy, core.Facts(
        amount_msat=amount_msat, rail=str(WithdrawalMethod.INTERNAL), asset=wallet.asset,
        account_group=wallet.owner_type, wallet_id=wallet.id))
    if decision is not None and decision.action is not core.Action.ALLOW:
        raise refusal_of(decision, version)


async def check_internal(session: AsyncSession, wd: Withdrawal, *, wallet: Wallet,
                         settings: Settings, live: LivePolicy = UNREAD) -> None:
    """The policy for an internal payment already settled in this unit of work (the API's
    fast path for our own invoices): allowed, or refused (raises, so it rolls back): one
    that would need approvers cannot wait for them."""
    version, decision = await decide_for(session, wd, wallet=wallet, bolt11=None,
                                         settings=settings, live=live)
    await apply_decision(session, wd, decision=decision, version=version, initiator=None,
                         settings=settings)
