"""A wallet's withdrawals, newest first, each with its latest Lightning payment attempt (for
the merchant dashboard's list; the API reads one withdrawal at a time)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.lightning.models import LnPayment, LnPaymentStatus
from satvault.payouts.models import Withdrawal, WithdrawalStatus

__all__ = ["WithdrawalRow", "display_status", "recent_withdrawals"]


@dataclass(frozen=True, slots=True)
class WithdrawalRow:
    withdrawal: Withdrawal
    payment: LnPayment | None

    @property
    def status(self) -> str:
        return display_status(self.withdrawal, self.payment)


def display_status(wd: Withdrawal, payment: LnPayment | None) -> str:
    """What the merchant is told: ``pending``, ``review`` (held for review or approval),
    ``broadcast``, ``confirmed``, ``failed``, ``cancelled`` or ``unknown`` (a Lightning
    payment whose outcome the node has not told yet)."""
    status = wd.status
    if status in (WithdrawalStatus.REVIEW, WithdrawalStatus.AWAITING_APPROVAL):
        return "review"
    if status == WithdrawalStatus.BATCHED:
        return "pending"
    if status in (WithdrawalStatus.PENDING, WithdrawalStatus.BROADCAST) and payment is not None \
            and payment.status == LnPaymentStatus.UNKNOWN:
        return "unknown"
    return str(status.value)


async def recent_withdrawals(session: AsyncSession, *, wallet_id: str, limit: int = 50
                             ) -> list[WithdrawalRow]:
    rows = list((await session.execute(
        select(Withdrawal).where(Withdrawal.wallet_id == wallet_id)
        .order_by(Withdrawal.created_at.desc(), Withdrawal.id.desc()).limit(limit)
    )).scalars())
    latest: dict[str, LnPayment] = {}
    if rows:
        for p in (await session.execute(
                select(LnPayment).where(LnPayment.withdrawal_id.in_([w.id for w in rows]))
                .order_by(LnPayment.attempt))).scalars():
            latest[p.withdrawal_id] = p  # the last attempt wins
    return [WithdrawalRow(w, latest.get(w.id)) for w in rows]
