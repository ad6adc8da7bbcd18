"""The withdrawal policy in the database: its versions (propose → approve by a second admin),
the approver groups, each wallet's allow-list, who initiated a withdrawal, and the decision
for one withdrawal (:func:`decide_for`).

Functions take a session and plain values and never commit.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, Store, User, Wallet
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.errors import AlreadyExists, InvalidInput, NotFound
from satvault.kernel.ids import new_id
from satvault.lightning.bolt11check import decode
from satvault.lightning.errors import LightningError
from satvault.onchain.addresses import parse_address
from satvault.onchain.errors import OnchainError
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.withdrawals.policy import core
from satvault.withdrawals.policy._audit import record
from satvault.withdrawals.policy.approvals import apply_decision
from satvault.withdrawals.policy.errors import InvalidPolicy, NotAnApprover
from satvault.withdrawals.policy.models import (
    AllowlistEntry,
    ApproverGroup,
    ApproverGroupMember,
    PolicyStatus,
    PolicyVersion,
)

__all__ = ["LivePolicy", "add_allowlist_entry", "add_group_member", "approve_policy",
           "check_internal", "decide_for", "destination_keys", "initiator_of",
           "list_allowlist", "live_columns", "live_from", "live_policy", "normalise_entry",
           "policy_versions", "propose_policy", "reject_policy", "remove_allowlist_entry"]

_NODE_HEX = frozenset("0123456789abcdef")


# --------------------------------------------------------------------------- versions


LivePolicy = tuple[int, core.Policy] | None


async def live_policy(session: AsyncSession) -> LivePolicy:
    """The live version and its rules; None before any policy was approved."""
    row = (await session.execute(select(PolicyVersion.version, PolicyVersion.rules).where(
        PolicyVersion.status == PolicyStatus.LIVE))).one_or_none()
    return None if row is None else live_from(row[0], row[1])


def live_columns() -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """The live version and its rules as two scalar subqueries, for a caller that folds
    them into a read it makes anyway (then :func:`live_from`)."""
    live = PolicyVersion.status == PolicyStatus.LIVE
    return (select(PolicyVersion.version).where(live).scalar_subquery(),
            select(PolicyVersion.rules).where(live).scalar_subquery())


def live_from(version: int | None, rules: str | None) -> LivePolicy:
    if version is None or rules is None:
        return None
    return int(version), core.parse_policy(json.loads(rules))


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
    admin must not be the one who proposed it."""
    await _admin(session, admin)
    row = (await session.execute(select(PolicyVersion).where(
        PolicyVersion.version == version).with_for_update())).scalar_one_or_none()
    if row is None:
        raise NotFound(f"policy version {version} not found")
    if row.status != PolicyStatus.PROPOSED:
        raise InvalidPolicy(f"policy version {version} is {row.status}, not proposed")
    if row.proposed_by == admin:
        raise NotAnApprover("a policy change needs a second admin: the proposer cannot "
                            "approve it")
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


async def add_group_member(session: AsyncSession, *, group: str, user_id: str,
                           actor: str) -> None:
    """Designate ``user_id`` an approver of ``group`` (created on first use)."""
    if not group or len(group) > 60:
        raise InvalidInput("a group name has 1 to 60 characters")
    if await session.get(User, user_id) is None:
        raise NotFound(f"user {user_id!r} not found")
    if await session.get(ApproverGroup, group) is None:
        session.add(ApproverGroup(name=group, created_at=utcnow()))
        await session.flush()
    if await session.get(ApproverGroupMember, (group, user_id)) is not None:
        return
    session.add(ApproverGroupMember(group_name=group, user_id=user_id, added_at=utcnow()))
    await session.flush()
    await record(session, actor=actor, action="approver_group.member_added",
                 subject=f"approver_group:{group}", details={"user_id": user_id})


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


def destination_keys(wd: Withdrawal, *, bolt11: str | None, network: str) -> set[str]:
    """What an allow-list entry may name for this withdrawal: the address; or the LNURL /
    Lightning Address it was asked for and the node the invoice pays."""
    if wd.method == WithdrawalMethod.ONCHAIN:
        return {parse_address(wd.destination, network).address}
    keys = {wd.destination.strip().lower().removeprefix("lightning:")}
    if bolt11 is not None:
        try:
            payee = decode(bolt11).payee
        except LightningError:
            payee = None
        if payee:
            keys.add(payee.lower())
    return keys


async def add_allowlist_entry(session: AsyncSession, *, wallet: Wallet, destination: str,
                              label: str, actor: str | None, settings: Settings
                              ) -> AllowlistEntry:
    """Add a destination; it counts as allow-listed only after the cool-down."""
    kind, text = normalise_entry(destination, settings.network)
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


_UNREAD: Any = object()


async def decide_for(session: AsyncSession, wd: Withdrawal, *, wallet: Wallet,
                     bolt11: str | None, settings: Settings, live: LivePolicy = _UNREAD,
                     ) -> tuple[int | None, core.Decision]:
    """The live policy's decision for ``wd`` (already written, its hold placed): the live
    version (None without a policy) and the decision. Reads only what the rules need
    (``live``: the live policy if the caller read it already, :func:`live_columns`)."""
    if live is _UNREAD:
        live = await live_policy(session)
    if live is None or not live[1].rules:
        return (None if live is None else live[0]), core.Decision(core.Action.ALLOW)
    version, policy = live
    need = core.needs(policy)
    now = utcnow()
    sums: dict[int, int] = {}
    for hours in sorted(need.window_hours):
        sums[hours] = int((await session.execute(
            select(func.coalesce(func.sum(Withdrawal.amount_msat), 0)).where(
                Withdrawal.wallet_id == wd.wallet_id,
                Withdrawal.created_at >= now - timedelta(hours=hours),
                Withdrawal.status.not_in((WithdrawalStatus.FAILED,
                                          WithdrawalStatus.CANCELLED))))).scalar_one())
    allowlisted = False
    if need.allowlist:
        keys = destination_keys(wd, bolt11=bolt11, network=settings.network)
        allowlisted = (await session.execute(select(AllowlistEntry.id).where(
            AllowlistEntry.wallet_id == wd.wallet_id, AllowlistEntry.destination.in_(keys),
            AllowlistEntry.usable_after <= now).limit(1))).first() is not None
    facts = core.Facts(amount_msat=wd.amount_msat, rail=str(wd.method), asset=wallet.asset,
                       account_group=wallet.owner_type, wallet_id=wallet.id,
                       window_sums=sums, allowlisted=allowlisted)
    return version, core.decide(policy, facts)


async def check_internal(session: AsyncSession, wd: Withdrawal, *, wallet: Wallet,
                         settings: Settings, live: LivePolicy = _UNREAD) -> None:
    """The policy for an internal payment already settled in this unit of work (the API's
    fast path for our own invoices): allowed, or refused (raises, so it rolls back): one
    that would need approvers cannot wait for them."""
    version, decision = await decide_for(session, wd, wallet=wallet, bolt11=None,
                                         settings=settings, live=live)
    await apply_decision(session, wd, decision=decision, version=version, initiator=None,
                         settings=settings)
