"""The live withdrawal policy and its decision for one withdrawal: read by the request's unit
of work (:mod:`satvault.withdrawals.policy.service`) and again at the release of one held for
approvers (:mod:`satvault.withdrawals.policy.approvals`), which the service module imports.

Functions take a session and plain values and never commit.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.config import Settings
from satvault.db import utcnow
from satvault.lightning.bolt11check import decode
from satvault.lightning.errors import LightningError
from satvault.onchain.addresses import parse_address
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.withdrawals.policy import core
from satvault.withdrawals.policy.models import AllowlistEntry, PolicyStatus, PolicyVersion

__all__ = ["UNREAD", "LivePolicy", "decide_for", "destination_keys", "live_columns",
           "live_from", "live_policy"]

# A caller that did not read the live policy (decide_for reads it then).
UNREAD: Any = object()


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


async def decide_for(session: AsyncSession, wd: Withdrawal, *, wallet: Wallet,
                     bolt11: str | None, settings: Settings, live: LivePolicy = UNREAD,
                     ) -> tuple[int | None, core.Decision]:
    """The live policy's decision for ``wd`` (already written, its hold placed): the live
    version (None without a policy) and the decision. Reads only what the rules need
    (``live``: the live policy if the caller read it already, :func:`live_columns`)."""
    if live is UNREAD:
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
