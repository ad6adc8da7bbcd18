"""Requesting a withdrawal: validate, then hold amount + fee reserve in the ledger, atomically.

The hold has no timeout: an outgoing payment's hold is released only by an explicit decision
(cancellation before it was batched), never by a clock — a clock-driven release of money that
may already be on its way is a refund of money that left.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import String, Table, func, insert, literal, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.config import Settings
from satvault.db import Amount, UtcDateTime, utcnow
from satvault.kernel.ids import new_id
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import transfer
from satvault.onchain.addresses import parse_address
from satvault.onchain.bip21 import parse_bip21
from satvault.payouts.errors import InvalidWithdrawal
from satvault.payouts.events import emit_withdrawal
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus

__all__ = ["DUST_SAT", "check_daily_limit", "insert_within_daily_limit",
           "request_withdrawal", "resolve_destination"]

# Bitcoin Core's dust thresholds at its default 3 sat/vB dust relay fee.
DUST_SAT = {"p2pkh": 546, "p2sh": 540, "p2wpkh": 294, "p2wsh": 330, "p2tr": 330}


def _spent_since(session: AsyncSession, wallet_id: str, since: datetime) -> Any:
    """The wallet's withdrawals since ``since`` (failed and cancelled ones excepted), as an
    expression that serialises concurrent withdrawals of one wallet: on PostgreSQL a function
    that locks the wallet row and then sums with a snapshot taken after the lock (migration
    0011), on SQLite, whose writers are serialised already, the sum itself."""
    if session.get_bind().dialect.name == "postgresql":
        return func.withdrawals_spent_since(literal(wallet_id, String()),
                                            literal(since, UtcDateTime()), type_=Amount())
    return select(func.coalesce(func.sum(Withdrawal.amount_msat), 0)).where(
        Withdrawal.wallet_id == wallet_id, Withdrawal.created_at >= since,
        Withdrawal.status.not_in((WithdrawalStatus.FAILED, WithdrawalStatus.CANCELLED))
    ).scalar_subquery()


def _over_limit(spent: int, settings: Settings) -> InvalidWithdrawal:
    left = max(0, settings.withdrawal_daily_limit_msat - spent)
    return InvalidWithdrawal(f"this would exceed the wallet's 24-hour withdrawal limit; "
                             f"{left} msat remain available")


async def check_daily_limit(session: AsyncSession, *, wallet: Wallet, amount_msat: int,
                            settings: Settings) -> None:
    """Refuse a withdrawal that would take the wallet past its rolling 24-hour limit.

    One statement that also serialises: concurrent withdrawals of one wallet (on-chain,
    Lightning, internal payments and refunds alike: they are all ``withdrawals`` rows) count
    each other one after the other until commit; summing without the wallet's lock let 195 of
    200 racing requests through a limit meant for one."""
    since = utcnow() - timedelta(hours=24)
    spent = int((await session.execute(select(_spent_since(session, wallet.id, since))))
                .scalar_one())
    if spent + amount_msat > settings.withdrawal_daily_limit_msat:
        raise _over_limit(spent, settings)


async def insert_within_daily_limit(session: AsyncSession, wd: Withdrawal, *,
                                    settings: Settings) -> None:
    """Write ``wd`` only if it keeps its wallet within the rolling 24-hour limit: the check
    of :func:`check_daily_limit` and the INSERT in one statement (``wd`` stays outside the
    ORM session: the hot path reads nothing back)."""
    since = utcnow() - timedelta(hours=24)
    table = cast(Table, Withdrawal.__table__)
    mapper = sa_inspect(Withdrawal)
    cols = [c for c in table.columns]
    values = [literal(getattr(wd, mapper.get_property_by_column(c).key), c.type) for c in cols]
    guard = _spent_since(session, wd.wallet_id, since) + wd.amount_msat \
        <= settings.withdrawal_daily_limit_msat
    res = await session.execute(insert(table).from_select(cols, select(*values).where(guard)))
    if res.rowcount != 1:  # type: ignore[attr-defined]
        spent = int((await session.execute(select(_spent_since(session, wd.wallet_id, since))))
                    .scalar_one())
        raise _over_limit(spent, settings)


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


async def request_withdrawal(session: AsyncSession, *, wallet: Wallet, destination: str,
                             amount_msat: int | None, settings: Settings,
                             store_id: str | None = None,
                             status: WithdrawalStatus = WithdrawalStatus.PENDING) -> Withdrawal:
    """``status``: ``review`` when the risk rules hold it (the payout job skips it)."""
    address, spk, kind, amount = resolve_destination(destination, amount_msat,
                                                     settings.network)
    if amount <= 0:
        raise InvalidWithdrawal("amount_msat must be positive")
    if amount % 1000:
        raise InvalidWithdrawal("on-chain amounts are whole satoshis: amount_msat must be a "
                                "multiple of 1000")
    sat = amount // 1000
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
    await check_daily_limit(session, wallet=wallet, amount_msat=amount, settings=settings)
    reserve = settings.withdrawal_fee_reserve_sat * 1000 \
        if settings.withdrawal_fee_policy == "user" else 0
    now = utcnow()
    wid = new_id("wd")
    wd = Withdrawal(id=wid, wallet_id=wallet.id, method=WithdrawalMethod.ONCHAIN,
                    destination=address, script_pubkey=spk.hex(), amount_msat=amount,
                    fee_reserve_msat=reserve,
                    fee_msat=None, status=status, batch_id=None, txid=None,
                    hold_id=f"wd:{wid}:hold", created_at=now, updated_at=now,
                    store_id=store_id)
    session.add(wd)
    await session.flush()
    platform = await ensure_platform_accounts(session, "BTC")
    await transfer(session, TransferSpec(
        wd.hold_id, wallet.ledger_account_id, platform.clearing.id, amount + reserve, "BTC",
        kind=TransferKind.PENDING, code="withdrawal", ref=wid))
    await emit_withdrawal(session, wd, "created")
    return wd
