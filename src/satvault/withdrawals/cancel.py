"""Cancelling a withdrawal: the one path that voids a withdrawal's hold and calls it
``cancelled``, whoever decides it.

:func:`void_and_cancel` is that path: the hold voided (``wd:<id>:void``, a transfer id the
ledger takes once), a queued Lightning payment retired, the status ``cancelled`` and the
``withdrawal.cancelled`` event, and a withdraw voucher it paid opened again, in the caller's
unit of work. An approver's rejection and an
expired approval window (``policy/approvals.py``), a case returning held money
(``review.py``) and :func:`cancel_pending` all go through it.

:func:`cancel_pending` cancels a ``pending`` withdrawal for its owner or an admin. Nothing
has left yet, but two workers may be about to take it, and each changes it under a row
lock: the payout job batches pending on-chain withdrawals (``SELECT … FOR UPDATE SKIP
LOCKED``, then ``batched``), the Lightning payer claims a queued payment (its row ``pending →
in_flight``, then the withdrawal ``broadcast``). The cancel is conditional in the same way:
for Lightning it first retires the payment row (``pending`` only; the payer's own order, the
payment before the withdrawal, so neither waits for the other in a cycle), then it turns the
withdrawal ``pending → cancelled`` (``pending`` only). Whoever changes the row first wins; the
other sees the state it left. A cancel that loses raises :class:`CannotCancel` naming the
state, and its unit of work rolls back whole: nothing changes.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.audit.service import record
from satvault.db import utcnow
from satvault.kernel.errors import NotFound
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.store import create_transfers
from satvault.lightning.models import LnPayment, LnPaymentStatus
from satvault.lightning.vouchers import reopen_after_failure
from satvault.payouts.errors import CannotCancel
from satvault.payouts.events import emit_withdrawal
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus

__all__ = ["cancel_pending", "void_and_cancel"]

MAX_REASON = 500


async def void_and_cancel(session: AsyncSession, wd: Withdrawal, *, why: str,
                          code: str = "withdrawal_cancelled") -> None:
    """Void ``wd``'s hold, retire its queued Lightning payment, call it ``cancelled`` and
    emit ``withdrawal.cancelled``. The caller has made sure nothing left (the row locked, or
    changed conditionally) and owns the unit of work."""
    (outcome,) = await create_transfers(session, [TransferSpec(
        f"wd:{wd.id}:void", kind=TransferKind.VOID, pending_id=wd.hold_id,
        code=code, ref=wd.id)])
    if not outcome.ok:
        raise RuntimeError(f"ledger refused to release {wd.id}: {outcome}")
    if wd.method == WithdrawalMethod.LIGHTNING:
        await session.execute(update(LnPayment).where(
            LnPayment.withdrawal_id == wd.id, LnPayment.status == LnPaymentStatus.PENDING,
        ).values(status=LnPaymentStatus.FAILED, failure_reason=why[:120],
                 updated_at=utcnow()))
    wd.status, wd.updated_at = WithdrawalStatus.CANCELLED, utcnow()
    await session.flush()
    # A voucher it paid opens again: its holder got nothing (as after a failed payment).
    await reopen_after_failure(session, wd, actor=f"withdrawal-cancel:{code}")
    await emit_withdrawal(session, wd, "cancelled")


async def _refuse(session: AsyncSession, withdrawal_id: str) -> CannotCancel:
    wd = await session.get(Withdrawal, withdrawal_id, populate_existing=True)
    assert wd is not None  # it was read in this unit of work; withdrawals are never deleted
    state = wd.status.value
    # Still pending, its payment row not: the payer has it (it turns the withdrawal
    # broadcast in the same unit of work, so this is only a payment row out of step).
    what = "its payment is already with the Lightning payer" \
        if wd.status == WithdrawalStatus.PENDING else f"it is {state}"
    return CannotCancel(f"withdrawal {withdrawal_id} cannot be cancelled: {what}; only a "
                        "pending withdrawal can", status=state)


async def cancel_pending(session: AsyncSession, *, withdrawal_id: str, actor: str,
                         reason: str = "") -> Withdrawal:
    """Cancel a ``pending`` withdrawal (see the module docstring): the hold voided, the
    event emitted, one audit row (``withdrawal.cancelled`` by ``actor``), in the caller's
    unit of work. Raises :class:`NotFound`, or :class:`CannotCancel` with the state it is in
    (batched, broadcast, cancelled … or taken by the payer a moment ago). The caller checks
    that ``actor`` may see the withdrawal."""
    reason = reason.strip()[:MAX_REASON]
    wd = await session.get(Withdrawal, withdrawal_id)
    if wd is None:
        raise NotFound(f"withdrawal {withdrawal_id!r} not found")
    if wd.status != WithdrawalStatus.PENDING:
        raise await _refuse(session, withdrawal_id)
    why = f"cancelled by {actor}"[:120]
    now = utcnow()
    if wd.method == WithdrawalMethod.LIGHTNING:
        taken = await session.execute(update(LnPayment).where(
            LnPayment.withdrawal_id == withdrawal_id,
            LnPayment.status == LnPaymentStatus.PENDING,
        ).values(status=LnPaymentStatus.FAILED, failure_reason=why, updated_at=now))
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise await _refuse(session, withdrawal_id)
    res = await session.execute(update(Withdrawal).where(
        Withdrawal.id == withdrawal_id, Withdrawal.status == WithdrawalStatus.PENDING,
    ).values(status=WithdrawalStatus.CANCELLED, updated_at=now))
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise await _refuse(session, withdrawal_id)
    wd = await session.get(Withdrawal, withdrawal_id, populate_existing=True)
    assert wd is not None
    await void_and_cancel(session, wd, why=why)
    await record(session, actor=actor, action="withdrawal.cancelled",
                 object=f"withdrawal:{withdrawal_id}",
                 before={"status": WithdrawalStatus.PENDING.value},
                 after={"status": wd.status.value, "reason": reason,
                        "method": wd.method.value, "amount_msat": wd.amount_msat})
    return wd
