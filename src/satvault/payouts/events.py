"""Withdrawal events for webhooks and live updates, written in the transaction that changes the
withdrawal (the outbox guarantees they are delivered iff the change committed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.events.outbox import Event, emit, emit_many
from satvault.payouts.models import Withdrawal

__all__ = ["emit_withdrawal", "emit_withdrawal_events", "withdrawal_payload"]


def withdrawal_payload(w: Withdrawal) -> dict[str, Any]:
    return {"id": w.id, "wallet_id": w.wallet_id, "store_id": w.store_id, "method": w.method,
            "status": w.status, "destination": w.destination, "amount_msat": w.amount_msat,
            "fee_msat": w.fee_msat, "fee_reserve_msat": w.fee_reserve_msat, "txid": w.txid,
            "invoice_id": w.invoice_id,
            "created_at": w.created_at.isoformat(), "updated_at": w.updated_at.isoformat()}


async def emit_withdrawal(session: AsyncSession, w: Withdrawal, event: str) -> None:
    """``event`` is created, awaiting_approval, approved, broadcast, confirmed, failed or
    cancelled."""
    await emit(session, type=f"withdrawal.{event}", subject_type="withdrawal", subject_id=w.id,
               payload=withdrawal_payload(w), store_id=w.store_id, wallet_id=w.wallet_id)


async def emit_withdrawal_events(session: AsyncSession, w: Withdrawal, events: Sequence[str]
                                 ) -> None:
    """Several of :func:`emit_withdrawal`'s events of one change, the last of its unit of
    work, in one INSERT with the wallets' ``balance_changed`` events that follow them."""
    payload = withdrawal_payload(w)
    await emit_many(session, [Event(type=f"withdrawal.{e}", subject_type="withdrawal",
                                    subject_id=w.id, payload=payload, store_id=w.store_id,
                                    wallet_id=w.wallet_id) for e in events], balances=True)
