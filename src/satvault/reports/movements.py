"""Money in and out of customer wallets, one row per movement, from the records of each rail.

* in, on-chain: chain payments credited to a wallet (``onchain_payments``), dated when seen;
* in, Lightning and internal: paid invoices (``ln_invoices``; ``internal`` when another
  wallet of the platform paid it), dated when paid;
* out: completed withdrawals (``withdrawals`` in ``confirmed``: on-chain, Lightning, internal,
  refunds included), dated when they completed.

Each row carries the wallet's owner and the person behind it (a user, with the merchants the
user owns; a merchant nobody owns is its own: :func:`~satvault.accounts.persons.person_of`, as
the withdrawal limits and the risk rules count), so a report can aggregate per customer across
rails and wallets. Days are UTC calendar days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ColumnElement, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.accounts.persons import person_of
from satvault.kernel.days import day_end, day_start
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from satvault.onchain.models import CreditState, OnchainPayment
from satvault.payouts.models import Withdrawal, WithdrawalStatus

__all__ = ["Movement", "day_bounds", "movements"]

MSAT = 1000


@dataclass(frozen=True, slots=True)
class Movement:
    day: date
    owner_type: str
    owner_id: str
    wallet_id: str
    direction: str  # "in" | "out"
    rail: str  # "onchain" | "lightning" | "internal"
    amount_msat: int
    ref: str
    person_type: str  # "user" | "merchant": who stands behind the wallet
    person_id: str

    @property
    def owner(self) -> str:
        return f"{self.owner_type}:{self.owner_id}"


def day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """``[start 00:00, end+1 00:00)`` in UTC: both days included (through the last day a
    date can hold, whose next midnight does not exist: up to the latest instant there is)."""
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    lo = day_start(start)
    assert lo is not None
    return lo, day_end(end) or datetime.max.replace(tzinfo=UTC)


async def movements(session: AsyncSession, start: date, end: date, *,
                    wallet_id: str | None = None) -> list[Movement]:
    """Every movement in ``[start, end]`` (UTC days); only one wallet's with ``wallet_id``."""
    lo, hi = day_bounds(start, end)

    def only(column: Any) -> ColumnElement[bool]:
        return true() if wallet_id is None else column == wallet_id

    out: list[Movement] = []
    person = person_of(Wallet.id).label("person")

    def moved(day: datetime, r: Any, direction: str, rail: str, amount: int, ref: str
              ) -> Movement:
        by = "merchant" if r.owner_type == "merchant" and r.person == r.owner_id else "user"
        return Movement(day.astimezone(UTC).date(), r.owner_type, r.owner_id, r.wallet_id,
                        direction, rail, amount, ref, by, r.person)

    P = OnchainPayment
    chain = (await session.execute(
        select(P.txid, P.vout, P.value_sat, P.first_seen_at, P.wallet_id, Wallet.owner_type,
               Wallet.owner_id, person).join(Wallet, Wallet.id == P.wallet_id)
        .where(P.credit_state == CreditState.CREDITED, P.first_seen_at >= lo,
               P.first_seen_at < hi, only(P.wallet_id)))).all()
    out += [moved(r.first_seen_at, r, "in", "onchain", int(r.value_sat) * MSAT,
                  f"{r.txid}:{r.vout}") for r in chain]
    lightning = (await session.execute(
        select(LnInvoice.id, LnInvoice.paid_msat, LnInvoice.paid_at, LnInvoice.internal,
               LnInvoice.wallet_id, Wallet.owner_type, Wallet.owner_id, person)
        .join(Wallet, Wallet.id == LnInvoice.wallet_id)
        .where(LnInvoice.status == LnInvoiceStatus.PAID, LnInvoice.paid_at >= lo,
               LnInvoice.paid_at < hi, only(LnInvoice.wallet_id)))).all()
    out += [moved(r.paid_at, r, "in", "internal" if r.internal else "lightning",
                  int(r.paid_msat or 0), r.id) for r in lightning]
    gone = (await session.execute(
        select(Withdrawal.id, Withdrawal.method, Withdrawal.amount_msat, Withdrawal.updated_at,
               Withdrawal.wallet_id, Wallet.owner_type, Wallet.owner_id, person)
        .join(Wallet, Wallet.id == Withdrawal.wallet_id)
        .where(Withdrawal.status == WithdrawalStatus.CONFIRMED, Withdrawal.updated_at >= lo,
               Withdrawal.updated_at < hi, only(Withdrawal.wallet_id)))).all()
    out += [moved(r.updated_at, r, "out", str(r.method.value), int(r.amount_msat), r.id)
            for r in gone]
    out.sort(key=lambda m: (m.day, m.owner_type, m.owner_id, m.direction, m.rail, m.ref))
    return out
