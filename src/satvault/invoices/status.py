"""The invoice status machine, pure: payments and time in, status out.

``new`` → ``processing`` (paid in full, waiting for confirmations) → ``settled``; or
``expired`` (nothing, or not enough, arrived in time); or ``invalid`` (paid in full but never
confirmed within the monitoring window). Additional statuses qualify the main one:
``paid_partial``, ``paid_over``, ``paid_late``, ``marked`` (set by the merchant).

"Paid in full" allows the store's tolerance: ``due * (1 - tolerance)``, rounded *up* so the
tolerance is never exceeded by rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = ["Additional", "InvoiceFacts", "Status", "closed", "decide", "next_deadline",
           "threshold_msat"]


class Status(StrEnum):
    NEW = "new"
    PROCESSING = "processing"
    SETTLED = "settled"
    EXPIRED = "expired"
    INVALID = "invalid"


class Additional(StrEnum):
    NONE = "none"
    PAID_PARTIAL = "paid_partial"
    PAID_OVER = "paid_over"
    PAID_LATE = "paid_late"
    MARKED = "marked"


FINAL = frozenset({Status.SETTLED, Status.INVALID})


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    due_msat: int
    tolerance_bp: int
    confirmed_msat: int  # credited (confirmed enough / settled Lightning)
    seen_msat: int  # confirmed + still unconfirmed, conflicted excluded
    expires_at: datetime
    full_seen_at: datetime | None  # when the seen total first reached the threshold
    now: datetime
    monitoring: timedelta
    accept_late: bool = True


def threshold_msat(due_msat: int, tolerance_bp: int) -> int:
    return -(-due_msat * (10_000 - tolerance_bp) // 10_000)


def decide(f: InvoiceFacts) -> tuple[Status, Additional]:
    need = threshold_msat(f.due_msat, f.tolerance_bp)
    late = f.full_seen_at is not None and f.full_seen_at > f.expires_at
    expired = f.now >= f.expires_at
    if f.seen_msat >= need and not (late and not f.accept_late):
        if f.seen_msat - f.due_msat >= 1000:  # on-chain pays whole sats: rounding is not "over"
            extra = Additional.PAID_OVER
        else:
            extra = Additional.PAID_LATE if late else Additional.NONE
        if f.confirmed_msat >= need:
            return Status.SETTLED, extra
        if expired and f.now >= f.expires_at + f.monitoring:
            return Status.INVALID, extra
        return Status.PROCESSING, extra
    if f.seen_msat >= need:  # late, and late payments are not accepted as settlement
        return Status.EXPIRED, Additional.PAID_LATE
    partial = Additional.PAID_PARTIAL if f.seen_msat > 0 else Additional.NONE
    return (Status.EXPIRED if expired else Status.NEW), partial


def closed(status: Status, *, expires_at: datetime, settled_at: datetime | None,
           now: datetime, monitoring: timedelta) -> bool:
    """Whether payments no longer move the invoice: ``invalid`` (final), ``expired`` once its
    monitoring window after ``expires_at`` is over, ``settled`` once the window after it
    settled is. Its money still reaches the wallet; the invoice keeps its status (found from
    outside: a payment weeks after an abandoned order expired settled it, ``invoice.settled``
    and all, and a final ``invalid`` turned ``settled`` a block later)."""
    if status is Status.INVALID:
        return True
    if status is Status.EXPIRED:
        return now >= expires_at + monitoring
    if status is Status.SETTLED and settled_at is not None:
        return now >= settled_at + monitoring
    return False


def next_deadline(expires_at: datetime, monitoring: timedelta, now: datetime
                  ) -> datetime | None:
    """The next moment at which :func:`decide` can answer differently with the same payments:
    time enters it only through ``expires_at`` and ``expires_at + monitoring``. None once both
    have passed (from then on only a payment can change the status)."""
    for moment in (expires_at, expires_at + monitoring):
        if now < moment:
            return moment
    return None
