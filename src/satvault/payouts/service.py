"""Requesting a withdrawal: validate, then hold amount + fee reserve in the ledger, atomically.

The hold has no timeout: an outgoing payment's hold is released only by an explicit decision
(cancellation before it was batched), never by a clock — a clock-driven release of money that
may already be on its way is a refund of money that left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import lru_cache
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Boolean,
    String,
    Table,
    and_,
    bindparam,
    case,
    column,
    func,
    insert,
    literal,
    or_,
    select,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.dml import Insert

from satvault.accounts.models import Wallet
from satvault.accounts.persons import person_wallets
from satvault.config import Settings
from satvault.db import Amount, UtcDateTime, utcnow
from satvault.kernel.errors import ConcurrentUpdate
from satvault.kernel.ids import new_id
from satvault.kyc.errors import LimitExceeded, WalletFrozen
from satvault.kyc.limits import Usage, limits_for, refusal, top_tier
from satvault.kyc.service import tier_expr
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import transfer
from satvault.onchain.addresses import parse_address
from satvault.onchain.bip21 import parse_bip21
from satvault.onchain.models import INTERNAL_PURPOSES, OnchainAddress, OnchainWallet
from satvault.payouts.errors import InvalidWithdrawal, LimitReachedAtRelease
from satvault.payouts.events import emit_withdrawal
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus

__all__ = ["DUST_SAT", "BoundInsert", "allows_by_columns", "check_daily_limit",
           "check_ever_allowed", "check_limits_at_release", "check_onchain_amount",
           "free_to_leave", "insert_within_daily_limit", "limits_left", "request_withdrawal",
           "resolve_destination", "usage_columns", "usage_params", "withdrawal_usage",
           "within_limits"]

# Bitcoin Core's dust thresholds at its default 3 sat/vB dust relay fee.
DUST_SAT = {"p2pkh": 546, "p2sh": 540, "p2wpkh": 294, "p2wsh": 330, "p2tr": 330}


def _over_limit(spent: int, settings: Settings) -> InvalidWithdrawal:
    left = max(0, settings.withdrawal_daily_limit_msat - spent)
    return InvalidWithdrawal(f"this would exceed the owner's 24-hour withdrawal limit (the "
                             f"wallets of one person count together); {left} msat remain "
                             "available")


def _usage_locked(wallet_id: Any, rail: Any, day: Any, month: Any) -> Any:
    """PostgreSQL's usage row: ``withdrawal_usage`` (migration 0018) locks the wallet row,
    then (since migration 0061) the person behind it, and sums the person's wallets after the
    locks (from the roll-ups since migration 0039), so concurrent withdrawals of one wallet,
    or of two wallets of one person, count each other one after the other."""
    return func.withdrawal_usage(wallet_id, rail, day, month).table_valued(
        column("spent_day", Amount()), column("rail_day", Amount()),
        column("rail_month", Amount()), column("frozen", Boolean())).alias("u")


def _rolled_up(wallet_id: Any, method: Any, since: Any) -> Any:
    """What ``wallet_id``'s limit group (:func:`~satvault.accounts.persons.person_wallets`)
    withdrew since ``since`` (on ``method``, or all rails for None), from PostgreSQL's
    roll-ups (migrations 0039 and 0061: ``limit_spent_since``), as a scalar subquery; locks
    nothing."""
    return select(column("total", Amount())).select_from(
        func.limit_spent_since(wallet_id, literal(None, String()) if method is None else method,
                               since).table_valued(column("total", Amount()))
    ).scalar_subquery()


def _summed(wallet_id: Any, method: Any, since: Any) -> Any:
    """The same from the rows themselves (SQLite, whose writers are serialised already)."""
    return select(func.coalesce(func.sum(Withdrawal.amount_msat), 0)).where(
        Withdrawal.wallet_id.in_(person_wallets(wallet_id)),
        or_(Withdrawal.created_at >= since, Withdrawal.released_at >= since),
        Withdrawal.status.not_in((WithdrawalStatus.FAILED, WithdrawalStatus.CANCELLED)),
        *(() if method is None else (Withdrawal.method == method,))).scalar_subquery()


def _usage_unlocked(spent: Any, wallet_id: Any, rail: Any, day: Any, month: Any) -> Any:
    """The usage row from ``spent`` (:func:`_rolled_up` or :func:`_summed`): locks
    nothing (SQLite's withdrawals, views, and checks before a remote call)."""
    return select(spent(wallet_id, None, day).label("spent_day"),
                  spent(wallet_id, rail, day).label("rail_day"),
                  spent(wallet_id, rail, month).label("rail_month"),
                  select(Wallet.frozen_at.is_not(None)).where(Wallet.id == wallet_id)
                  .scalar_subquery().label("frozen")).subquery("u")


def _usage(session: AsyncSession, wallet: Wallet, rail: str, *, lock: bool = True) -> Any:
    """One row: ``spent_day`` (all rails, the platform's 24-hour limit), ``rail_day`` and
    ``rail_month`` (this rail, the KYC tier's windows), ``frozen`` and the owner's ``tier``.
    The sums are the wallet's limit group's
    (:func:`~satvault.accounts.persons.person_wallets`: the person's wallets).
    On PostgreSQL the sums come from ``withdrawal_usage`` (migration 0018), which locks the
    wallet row and the person first and sums after the locks; on SQLite, whose writers are
    serialised already, from subqueries. One statement either way. ``lock=False`` (views,
    checks before a remote call) locks nothing: the roll-ups' sums on PostgreSQL, the
    subqueries on SQLite."""
    now = utcnow()
    day, month = now - timedelta(hours=24), now - timedelta(days=30)
    tier = tier_expr(wallet.owner_type, wallet.owner_id).label("tier")
    if session.get_bind().dialect.name == "postgresql":
        args = (literal(wallet.id, String()), literal(rail, String()),
                literal(day, UtcDateTime()), literal(month, UtcDateTime()))
        if lock:
            return _usage_locked(*args), tier
        return _usage_unlocked(_rolled_up, *args), tier
    return _usage_unlocked(_summed, wallet.id, rail, day, month), tier


def _refuse(row: Any, *, wallet: Wallet, rail: str, amount_msat: int,
            settings: Settings) -> None:
    """Raise the first refusal the usage row gives: frozen, the platform's 24-hour limit,
    the KYC tier's limits (per transaction, 24 h, 30 d on this rail)."""
    if row.frozen:
        raise WalletFrozen(wallet.id, wallet.frozen_reason or "frozen by an operator")
    if int(row.spent_day) + amount_msat > settings.withdrawal_daily_limit_msat:
        raise _over_limit(int(row.spent_day), settings)
    usage = Usage(tier=int(row.tier), day_msat=int(row.rail_day),
                  month_msat=int(row.rail_month))
    refused = refusal(settings.kyc_tier_limits_msat, usage, rail=rail, amount_msat=amount_msat)
    if refused is not None:
        raise refused


async def withdrawal_usage(session: AsyncSession, *, wallet: Wallet, rail: str,
                           lock: bool = True) -> Any:
    """The usage row of :func:`_usage`: ``spent_day``, ``rail_day``, ``rail_month``,
    ``frozen``, ``tier``. With ``lock`` (a withdrawal's check) it locks the wallet on
    PostgreSQL; views pass ``lock=False``."""
    u, tier = _usage(session, wallet, rail, lock=lock)
    return (await session.execute(select(u.c.spent_day, u.c.rail_day, u.c.rail_month,
                                         u.c.frozen, tier).select_from(u))).one()


def _allows(row: Any, *, wallet: Wallet, rail: str, amount_msat: int,
            settings: Settings) -> bool:
    try:
        _refuse(row, wallet=wallet, rail=rail, amount_msat=amount_msat, settings=settings)
    except (WalletFrozen, InvalidWithdrawal, LimitExceeded):
        return False
    return True


async def within_limits(session: AsyncSession, *, wallet: Wallet, amount_msat: int,
                        settings: Settings, rail: str) -> bool:
    """Whether :func:`check_daily_limit` would let this withdrawal through now, locking
    nothing: asked before a remote call that cannot be undone (taking a payee's invoice off
    the node), so a payer the unit of work would refuse changes nothing anywhere. The unit of
    work checks again under the lock."""
    row = await withdrawal_usage(session, wallet=wallet, rail=rail, lock=False)
    return _allows(row, wallet=wallet, rail=rail, amount_msat=amount_msat, settings=settings)


async def check_ever_allowed(session: AsyncSession, *, wallet: Wallet, amount_msat: int,
                             settings: Settings, rail: str) -> None:
    """Raise what would refuse a withdrawal of ``amount_msat`` from ``wallet`` whatever the
    wallet spent before: frozen, over the platform's 24-hour limit, over the KYC tier's
    limits on ``rail``. For money held now to be paid out later (a voucher): found from
    outside, a voucher over the tier's per-transaction limit was made, its amount held, and
    could never be redeemed. Locks nothing; the payout checks again when it happens."""
    row = await withdrawal_usage(session, wallet=wallet, rail=rail, lock=False)
    _refuse(_UsageRow(spent_day=0, rail_day=0, rail_month=0, frozen=bool(row.frozen),
                      tier=int(row.tier)),
            wallet=wallet, rail=rail, amount_msat=amount_msat, settings=settings)


class _UsageRow(NamedTuple):
    spent_day: int
    rail_day: int
    rail_month: int
    frozen: bool
    tier: int


def usage_columns(dialect: str) -> tuple[ColumnElement[Any], ...]:
    """:func:`within_limits`'s usage as four columns (``spent_day``, ``rail_day``,
    ``rail_month``, ``tier``) of a read that selects the paying :class:`Wallet` (correlated
    with its row), the rail and the windows' starts bound as ``u_rail``, ``u_day`` and
    ``u_month``: for a caller that folds them into a read it makes anyway, then
    :func:`allows_by_columns`. Locks nothing; built once per dialect by the caller."""
    rail = bindparam("u_rail", type_=String())
    day, month = bindparam("u_day", type_=UtcDateTime()), bindparam("u_month",
                                                                    type_=UtcDateTime())
    spent = _rolled_up if dialect == "postgresql" else _summed
    return (spent(Wallet.id, None, day), spent(Wallet.id, rail, day),
            spent(Wallet.id, rail, month),
            tier_expr(Wallet.owner_type.expression, Wallet.owner_id.expression))


def usage_params(rail: str) -> dict[str, Any]:
    """The values of :func:`usage_columns`' parameters, now."""
    now = utcnow()
    return {"u_rail": rail, "u_day": now - timedelta(hours=24),
            "u_month": now - timedelta(days=30)}


def allows_by_columns(values: Sequence[Any], *, wallet: Wallet, rail: str, amount_msat: int,
                      settings: Settings) -> bool:
    """:func:`within_limits` on the values :func:`usage_columns` read."""
    spent_day, rail_day, rail_month, tier = values
    row = _UsageRow(int(spent_day or 0), int(rail_day or 0), int(rail_month or 0),
                    wallet.frozen_at is not None, int(tier or 0))
    return _allows(row, wallet=wallet, rail=rail, amount_msat=amount_msat, settings=settings)


async def check_daily_limit(session: AsyncSession, *, wallet: Wallet, amount_msat: int,
                            settings: Settings, rail: str) -> None:
    """Refuse a withdrawal on ``rail`` (``onchain``, ``lightning``, ``internal``) from a
    frozen wallet, past the rolling 24-hour limit, or past its owner's KYC tier limits on
    that rail (per transaction, rolling 24 h, rolling 30 days). The windows count the
    person's wallets together (the user's own and those of the merchants the user owns,
    :func:`~satvault.accounts.persons.person_wallets`); the tier is the paying wallet's owner's.

    One statement that also serialises: concurrent withdrawals of one wallet (on-chain,
    Lightning, internal payments and refunds alike: they are all ``withdrawals`` rows), or
    of two wallets of one person, count each other one after the other until commit; summing
    without the wallet's lock let 195 of 200 racing requests through a limit meant for one."""
    row = await withdrawal_usage(session, wallet=wallet, rail=rail)
    _refuse(row, wallet=wallet, rail=rail, amount_msat=amount_msat, settings=settings)


async def check_limits_at_release(session: AsyncSession, wd: Withdrawal, *, wallet: Wallet,
                                  settings: Settings) -> None:
    """A held withdrawal (``review`` or ``awaiting_approval``) about to be released: it leaves
    now, so it counts from now (``released_at``) and must fit the limits
    :func:`check_daily_limit` applies (the platform's 24 hours, the tier's per transaction,
    24 hours and 30 days on its rail) beside what the wallet withdrew in the windows before
    this moment, itself counted once. Otherwise :class:`LimitReachedAtRelease` (the caller's
    unit of work rolls back: it stays held, to be released when the window has room or
    returned). Locks the wallet as a new withdrawal's check does; ``wd`` is the caller's,
    locked or written under its request's lock."""
    wd.released_at = utcnow()
    await session.flush()
    row = await withdrawal_usage(session, wallet=wallet, rail=wd.method.value)
    amount = wd.amount_msat  # released now, it is inside every window once: left out here
    before = _UsageRow(int(row.spent_day) - amount, int(row.rail_day) - amount,
                       int(row.rail_month) - amount, bool(row.frozen), int(row.tier))
    try:
        _refuse(before, wallet=wallet, rail=wd.method.value, amount_msat=amount,
                settings=settings)
    except (InvalidWithdrawal, LimitExceeded) as exc:
        raise LimitReachedAtRelease(
            f"withdrawal {wd.id} cannot be released now: counted with what the wallet "
            f"withdrew before this release, {exc}. It stays held: release it once the "
            "window has room, or return the money") from exc


def free_to_leave(settings: Settings) -> ColumnElement[bool]:
    """Whether a queued (``pending``) withdrawal may be sent now, as an SQL condition
    correlated on ``withdrawals`` (the payout job's and the Lightning payer's pick-up): its
    wallet is not frozen, and the limits of its wallet's owner's tier *now* on its rail
    (:func:`~satvault.kyc.service.tier_expr`, the tier every check reads) allow it: its amount
    per transaction, and in the 24-hour and 30-day windows what the person's wallets
    (:func:`~satvault.accounts.persons.person_wallets`) sent on the rail (or have on its way)
    with what they queued or hold before it, itself included (:func:`_queued_through`).
    Otherwise it waits, its money held, until the wallet is unfrozen or the tier allows it
    again, or it is cancelled.

    Found from outside: withdrawals queued before an approved record lowered the owner's
    tier still left above the new tier's limit (900,000 sat broadcast at tier 0, whose limit
    is 100,000), where a held one is checked again at its release; and several, each within
    the new per-transaction limit, left together past its 24-hour limit. Counted oldest
    first, so two payers picking two of one person's withdrawals at once need not see each
    other: the younger counts the older whatever its state."""
    table = settings.kyc_tier_limits_msat
    now, me = utcnow(), Withdrawal
    return select(Wallet.id).where(
        Wallet.id == me.wallet_id, Wallet.frozen_at.is_(None),
        me.amount_msat <= _tier_limit(table, 0, Wallet, me.method),
        _queued_through(table, now - timedelta(hours=24))
        <= _tier_limit(table, 1, Wallet, me.method),
        _queued_through(table, now - timedelta(days=30))
        <= _tier_limit(table, 2, Wallet, me.method)).exists()


def _tier_limit(table: Mapping[int, Mapping[str, Sequence[int]]], i: int, wallet: Any,
                method: Any) -> ColumnElement[int]:
    """The ``i``-th limit (per transaction, 24 h, 30 d) on rail ``method`` of the tier of
    ``wallet``'s owner now, as SQL."""
    top = top_tier(table)

    def of(tier: int) -> ColumnElement[int]:
        return case({WithdrawalMethod(rail): literal(lim[i], Amount())
                     for rail, lim in table[tier].items()},
                    value=method, else_=literal(0, Amount()))
    lower = {t: of(t) for t in table if t != top}
    # One tier only: no CASE (one without a WHEN is no SQL; found from outside, every
    # pick-up failed on a platform with a single tier).
    return case(lower, value=tier_expr(wallet.owner_type, wallet.owner_id),
                else_=of(top)) if lower else of(top)


# Not left yet: queued for a payer, or held (approvers, a risk case). Counted at pick-up in
# the order they were asked for; what left (or is leaving) is counted whatever its age.
_NOT_LEFT = (WithdrawalStatus.PENDING, WithdrawalStatus.AWAITING_APPROVAL,
             WithdrawalStatus.REVIEW)


def _queued_through(table: Mapping[int, Mapping[str, Sequence[int]]], since: Any) -> Any:
    """What the person behind the correlated ``withdrawals`` row's wallet counts against a
    window from ``since`` on its rail (the rows :func:`_summed` counts) at its pick-up: what
    left, and what has not left yet but was asked for before it (itself included) and may
    leave at its owner's tier now (one above that tier's per-transaction limit waits for a
    higher tier, holding no younger one back)."""
    o, ow, me = aliased(Withdrawal, name="qt_o"), aliased(Wallet, name="qt_w"), Withdrawal
    not_left = or_(*(o.status == s for s in _NOT_LEFT))
    before = or_(o.created_at < me.created_at,
                 and_(o.created_at == me.created_at, o.id <= me.id))
    return select(func.coalesce(func.sum(o.amount_msat), 0)) \
        .select_from(o).join(ow, ow.id == o.wallet_id).where(
            o.wallet_id.in_(person_wallets(me.wallet_id)), o.method == me.method,
            or_(o.created_at >= since, o.released_at >= since),
            o.status != WithdrawalStatus.FAILED, o.status != WithdrawalStatus.CANCELLED,
            or_(~not_left, and_(before, o.amount_msat <= _tier_limit(table, 0, ow, o.method)))
        ).correlate(me).scalar_subquery()


async def limits_left(session: AsyncSession, *, wallet: Wallet, settings: Settings
                      ) -> dict[str, Any]:
    """For the wallet view: the owner's tier, whether the wallet is frozen, and per rail the
    tier's limits and what is left in each window (the platform's 24-hour limit included)."""
    rails: dict[str, Any] = {}
    tier, frozen = 0, False
    for method in WithdrawalMethod:
        row = await withdrawal_usage(session, wallet=wallet, rail=method.value, lock=False)
        tier, frozen = int(row.tier), bool(row.frozen)
        lim = limits_for(settings.kyc_tier_limits_msat, tier, method.value)
        platform_left = max(0, settings.withdrawal_daily_limit_msat - int(row.spent_day))
        day_left = min(max(0, lim.day_msat - int(row.rail_day)), platform_left)
        month_left = max(0, lim.month_msat - int(row.rail_month))
        rails[method.value] = {
            "per_transaction_msat": lim.per_tx_msat, "day_limit_msat": lim.day_msat,
            "month_limit_msat": lim.month_msat, "day_left_msat": day_left,
            "month_left_msat": month_left,
            "max_now_msat": 0 if frozen else min(lim.per_tx_msat, day_left, month_left)}
    return {"kyc_tier": tier, "frozen": frozen,
            "frozen_reason": wallet.frozen_reason if frozen else None, "limits": rails}


class BoundInsert(NamedTuple):
    """An INSERT built once with bound parameters only, and the values of one execution
    (:func:`insert_within_daily_limit`'s ``also``): a statement that is the same object
    every time keeps the guarded INSERT it joins built once too."""

    statement: Insert
    params: Mapping[str, Any]


@lru_cache(maxsize=32)
def _guarded_insert(dialect: str, tiers: int, also: Insert | None
                    ) -> tuple[Insert, tuple[tuple[str, str], ...]]:
    """The daily-limit guarded INSERT … SELECT of a withdrawal, built once per database,
    number of KYC tiers and ``also`` statement (the hot path of every internal payment:
    building, coercing and hashing it anew cost more CPU than running it). Every value is a
    bound parameter: ``w_<attribute>`` the withdrawal's columns, ``u_*`` the usage row's
    arguments, ``k_*`` the owner, ``g_*`` the limits. Returns the statement and the
    (parameter, attribute) names of the withdrawal's columns."""
    table = cast(Table, Withdrawal.__table__)
    mapper = sa_inspect(Withdrawal)
    cols = list(table.columns)
    names = tuple((f"w_{mapper.get_property_by_column(c).key}",
                   mapper.get_property_by_column(c).key) for c in cols)
    values = [bindparam(name, type_=c.type) for (name, _key), c in zip(names, cols, strict=True)]
    wallet_id, rail = bindparam("u_wallet", type_=String()), bindparam("u_rail", type_=String())
    day, month = bindparam("u_day", type_=UtcDateTime()), bindparam("u_month", type_=UtcDateTime())
    tier = tier_expr(bindparam("k_owner_type", type_=String()),
                     bindparam("k_owner_id", type_=String())).label("tier")
    u = _usage_locked(wallet_id, rail, day, month) if dialect == "postgresql" \
        else _usage_unlocked(_summed, wallet_id, rail, day, month)
    amount = bindparam("g_amount", type_=Amount())

    def tier_case(index: int) -> Any:
        return case({t: bindparam(f"g_t{t}_{index}", type_=Amount()) for t in range(tiers)},
                    value=tier, else_=bindparam(f"g_top_{index}", type_=Amount()))

    guard = and_(u.c.frozen == literal(False),
                 u.c.spent_day + amount <= bindparam("g_daily", type_=Amount()),
                 amount <= tier_case(0),
                 u.c.rail_day + amount <= tier_case(1),
                 u.c.rail_month + amount <= tier_case(2))
    stmt = insert(table).from_select(cols, select(*values).select_from(u).where(guard))
    if also is not None:
        stmt = stmt.add_cte(also.cte("also_written"))
    return stmt, names


async def insert_within_daily_limit(session: AsyncSession, wd: Withdrawal, *, wallet: Wallet,
                                    settings: Settings, also: BoundInsert | None = None) -> None:
    """Write ``wd`` only if :func:`check_daily_limit` would let it through (not frozen, the
    24-hour limit, the tier's limits on its rail): the check and the INSERT in one statement
    (``wd`` stays outside the ORM session: the hot path reads nothing back). The statement
    is built once (:func:`_guarded_insert`); this call only binds its values.

    ``also``: another INSERT that belongs with this one (the risk decision of an internal
    payment): on PostgreSQL in the same statement (a data-modifying ``WITH``, which runs
    whether or not the guard lets the withdrawal in: a refusal raises, and the caller's unit
    of work rolls both back), on SQLite, which has none, just before it. Its parameter names
    must not start with ``w_``, ``u_``, ``k_`` or ``g_``."""
    rail = str(wd.method)
    dialect = session.get_bind().dialect.name
    in_cte = also is not None and dialect == "postgresql"
    table = settings.kyc_tier_limits_msat
    stmt, names = _guarded_insert(dialect, len(table),
                                  also.statement if in_cte and also is not None else None)
    now = utcnow()
    params: dict[str, Any] = {name: getattr(wd, key) for name, key in names}
    params.update(u_wallet=wallet.id, u_rail=rail, u_day=now - timedelta(hours=24),
                  u_month=now - timedelta(days=30), k_owner_type=wallet.owner_type,
                  k_owner_id=wallet.owner_id, g_amount=wd.amount_msat,
                  g_daily=settings.withdrawal_daily_limit_msat)
    top = table[max(table)][rail]
    for index in range(3):
        params[f"g_top_{index}"] = top[index]
        for t, rails in table.items():
            params[f"g_t{t}_{index}"] = rails[rail][index]
    if also is not None:
        if in_cte:
            params.update(also.params)
        else:
            await session.execute(also.statement, dict(also.params))
    res = await session.execute(stmt, params)
    if res.rowcount != 1:  # type: ignore[attr-defined]
        row = await withdrawal_usage(session, wallet=wallet, rail=rail)
        _refuse(row, wallet=wallet, rail=rail, amount_msat=wd.amount_msat, settings=settings)
        raise ConcurrentUpdate("the withdrawal could not be written; try again")


def resolve_destination(destination: str, amount_msat: int | None, network: str
                        ) -> tuple[str, bytes, str, int]:
    """(address, script_pubkey, kind, amount_msat) from an address or a BIP21 URI."""
    text = destination.strip()
    address = text
    if text.lower().startswith("bitcoin:"):
        uri = parse_bip21(text)
        address = uri.address
        if uri.amount_sat is not None:
            if amount_msat is not None and amount_msat != uri.amount_sat * 1000:
                raise InvalidWithdrawal("amount_msat differs from the amount in the payment URI")
            amount_msat = uri.amount_sat * 1000
    info = parse_address(address, network)
    if amount_msat is None:
        raise InvalidWithdrawal("amount_msat is required (the destination carries no amount)")
    return info.address, info.script_pubkey, info.kind, amount_msat


async def _refuse_own_wallet(session: AsyncSession, script_pubkey: bytes, *,
                             wallet: Wallet) -> None:
    """Refuse an address of the platform's own wallets: the semi-cold or cold wallet's, or
    one a move of ours pays (change, sweep, refill). Paid there, the coins stay with the
    platform while the customer's money has left the books: a change output is not credited
    to anyone, yet spent again as the platform's. Refuse too a deposit address of the paying
    wallet's own owner (found from outside: a merchant's refund to its own invoice's address
    settled that invoice with the merchant's own money, raised its refund cap and paid the
    fees on a circle; over Lightning the same is refused). Another customer's deposit address
    is a payment to that customer (credited when it confirms) and goes on."""
    row = (await session.execute(
        select(OnchainWallet.role, OnchainAddress.purpose, OnchainAddress.owner_type,
               OnchainAddress.owner_id)
        .join(OnchainWallet, OnchainWallet.id == OnchainAddress.wallet_id)
        .where(OnchainAddress.script_pubkey == script_pubkey.hex()))).one_or_none()
    if row is None:
        return
    if row.role != "deposit" or row.purpose in INTERNAL_PURPOSES:
        raise InvalidWithdrawal("this address belongs to one of the platform's own wallets; "
                                "it cannot receive a withdrawal")
    if (row.owner_type, row.owner_id) == (wallet.owner_type, wallet.owner_id):
        raise InvalidWithdrawal("this address is one of this wallet's own deposit addresses: "
                                "paying it would only send the money round to where it is")


def check_onchain_amount(amount_msat: int, kind: str, settings: Settings) -> None:
    """Refuse (:class:`InvalidWithdrawal`) an on-chain amount no payout could carry to an
    output of ``kind``: not positive, not whole satoshis, below the dust floor or above the
    per-withdrawal limit."""
    if amount_msat <= 0:
        raise InvalidWithdrawal("amount_msat must be positive")
    if amount_msat % 1000:
        raise InvalidWithdrawal("on-chain amounts are whole satoshis: amount_msat must be a "
                                "multiple of 1000")
    sat = amount_msat // 1000
    floor = max(DUST_SAT.get(kind, 330), settings.withdrawal_min_sat)
    if sat < floor:
        raise InvalidWithdrawal(f"{sat} sat is below the minimum of {floor} sat for a {kind} "
                                "output (dust)")
    # The signer's own per-transaction cap counts the fee too: a larger withdrawal could
    # never be signed, so it is refused here rather than left waiting.
    ceiling = min(settings.withdrawal_max_sat,
                  settings.signer_max_tx_sat - settings.withdrawal_fee_reserve_sat)
    if sat > ceiling:
        raise InvalidWithdrawal(f"{sat} sat is above the per-withdrawal limit of {ceiling} sat")


async def request_withdrawal(session: AsyncSession, *, wallet: Wallet, destination: str,
                             amount_msat: int | None, settings: Settings,
                             store_id: str | None = None, invoice_id: str | None = None,
                             status: WithdrawalStatus = WithdrawalStatus.PENDING) -> Withdrawal:
    """``status``: ``review`` when the risk rules hold it (the payout job skips it);
    ``invoice_id``: the store invoice it refunds."""
    address, spk, kind, amount = resolve_destination(destination, amount_msat,
                                                     settings.network)
    await _refuse_own_wallet(session, spk, wallet=wallet)
    check_onchain_amount(amount, kind, settings)
    await check_daily_limit(session, wallet=wallet, amount_msat=amount, settings=settings,
                            rail=WithdrawalMethod.ONCHAIN.value)
    reserve = settings.withdrawal_fee_reserve_sat * 1000 \
        if settings.withdrawal_fee_policy == "user" else 0
    now = utcnow()
    wid = new_id("wd")
    wd = Withdrawal(id=wid, wallet_id=wallet.id, method=WithdrawalMethod.ONCHAIN,
                    destination=address, script_pubkey=spk.hex(), amount_msat=amount,
                    fee_reserve_msat=reserve,
                    fee_msat=None, status=status, batch_id=None, txid=None,
                    hold_id=f"wd:{wid}:hold", created_at=now, updated_at=now,
                    store_id=store_id, invoice_id=invoice_id)
    session.add(wd)
    await session.flush()
    platform = await ensure_platform_accounts(session, "BTC")
    await transfer(session, TransferSpec(
        wd.hold_id, wallet.ledger_account_id, platform.clearing.id, amount + reserve, "BTC",
        kind=TransferKind.PENDING, code="withdrawal", ref=wid))
    await emit_withdrawal(session, wd, "created")
    return wd
