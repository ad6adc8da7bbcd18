"""Account statements: each transfer that touched an account, newest first, with the account's
balances right after it (snapshotted at write time, so a page costs one index range scan no
matter how long the history is). Pages are cut with an opaque cursor, never an offset."""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.kernel.errors import InvalidInput
from satvault.ledger.core import Account, Balances, HoldState, TransferKind
from satvault.ledger.errors import LedgerError
from satvault.ledger.models import LedgerTransfer
from satvault.ledger.store import get_account

__all__ = ["InvalidCursor", "InvalidFilter", "StatementLine", "StatementPage", "codes_of",
           "statement"]

transfers_t = LedgerTransfer.__table__
MAX_PAGE = 500


class InvalidCursor(LedgerError):
    pass


class InvalidFilter(LedgerError, InvalidInput):
    pass


@dataclass(frozen=True, slots=True)
class StatementLine:
    seq: int
    transfer_id: str
    kind: TransferKind
    direction: str  # "debit" or "credit", from this account's side
    amount: int
    asset: str
    counterparty_account_id: int
    pending_id: str | None
    hold_state: HoldState | None
    code: str
    ref: str
    created_at: datetime
    balances_after: Balances

    @property
    def posted_after(self) -> int:
        b = self.balances_after
        return b.credits_posted - b.debits_posted

    @property
    def available_after(self) -> int:
        b = self.balances_after
        return b.credits_posted - b.debits_posted - b.debits_pending


@dataclass(frozen=True, slots=True)
class StatementPage:
    account: Account
    lines: tuple[StatementLine, ...]
    next_cursor: str | None


def _encode(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s:{seq}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value = raw.split(":", 1)
        if prefix != "s" or not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise ValueError(prefix)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor(f"invalid cursor {cursor!r}") from exc


async def statement(
    session: AsyncSession, account_id: int, *, limit: int = 50, cursor: str | None = None,
    since: datetime | None = None, until: datetime | None = None,
    direction: str | None = None, codes: Collection[str] | None = None,
) -> StatementPage:
    """A page of the account's statement, newest first. Optional filters: ``[since,
    until)`` on the transfer's time, ``direction`` (``debit`` or ``credit``, from this
    account's side) and ``codes`` (the transfers' codes: ``deposit``, ``ln_withdrawal``…)."""
    account = await get_account(session, account_id)
    limit = max(1, min(limit, MAX_PAGE))
    t = transfers_t.c
    if direction == "debit":
        side = t.debit_account_id == account_id
    elif direction == "credit":
        side = t.credit_account_id == account_id
    elif direction is None:
        side = or_(t.debit_account_id == account_id, t.credit_account_id == account_id)
    else:
        raise InvalidFilter(f"direction is 'debit' or 'credit', not {direction!r}")
    stmt = select(transfers_t).where(side)
    if since is not None:
        stmt = stmt.where(t.created_at >= since)
    if until is not None:
        stmt = stmt.where(t.created_at < until)
    if codes is not None:
        stmt = stmt.where(t.code.in_(list(codes)))
    if cursor is not None:
        stmt = stmt.where(t.seq < _decode(cursor))
    rows = (await session.execute(stmt.order_by(t.seq.desc()).limit(limit + 1))).all()
    lines = []
    for row in rows[:limit]:
        is_debit = row.debit_account_id == account_id
        prefix = "dr_" if is_debit else "cr_"
        after = Balances(*(getattr(row, prefix + f) for f in (
            "debits_posted", "credits_posted", "debits_pending", "credits_pending")))
        lines.append(StatementLine(
            seq=row.seq,
            transfer_id=row.id,
            kind=TransferKind(row.kind),
            direction="debit" if is_debit else "credit",
            amount=row.amount,
            asset=row.asset,
            counterparty_account_id=row.credit_account_id if is_debit else row.debit_account_id,
            pending_id=row.pending_id,
            hold_state=HoldState(row.state) if row.state else None,
            code=row.code,
            ref=row.ref,
            created_at=row.created_at,
            balances_after=after,
        ))
    next_cursor = _encode(rows[limit - 1].seq) if len(rows) > limit else None
    return StatementPage(account, tuple(lines), next_cursor)


async def codes_of(session: AsyncSession, account_id: int) -> list[str]:
    """The transfer codes found in this account's history (what a statement can filter by)."""
    t = transfers_t.c
    rows = await session.execute(select(t.code).distinct().where(
        or_(t.debit_account_id == account_id, t.credit_account_id == account_id)))
    return sorted(c for c in rows.scalars() if c)
