"""The invoice status machine, value in, value out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from satvault.invoices.status import Additional, InvoiceFacts, Status, decide, threshold_msat

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def facts(**kw):
    base = dict(due_msat=100_000, tolerance_bp=0, confirmed_msat=0, seen_msat=0,
                expires_at=T0 + timedelta(minutes=15), full_seen_at=None,
                now=T0 + timedelta(minutes=1), monitoring=timedelta(hours=24))
    base.update(kw)
    return InvoiceFacts(**base)


def test_lifecycle():
    assert decide(facts()) == (Status.NEW, Additional.NONE)
    assert decide(facts(seen_msat=40_000)) == (Status.NEW, Additional.PAID_PARTIAL)
    paid = dict(seen_msat=100_000, full_seen_at=T0 + timedelta(minutes=2))
    assert decide(facts(**paid)) == (Status.PROCESSING, Additional.NONE)
    assert decide(facts(**paid, confirmed_msat=100_000)) == (Status.SETTLED, Additional.NONE)
    assert decide(facts(seen_msat=120_000, confirmed_msat=120_000, full_seen_at=T0)) == (
        Status.SETTLED, Additional.PAID_OVER)


def test_expiry_late_invalid_and_tolerance():
    later = T0 + timedelta(minutes=30)
    assert decide(facts(now=later)) == (Status.EXPIRED, Additional.NONE)
    assert decide(facts(now=later, seen_msat=1)) == (Status.EXPIRED, Additional.PAID_PARTIAL)
    late = dict(now=later, seen_msat=100_000, confirmed_msat=100_000,
                full_seen_at=T0 + timedelta(minutes=20))
    assert decide(facts(**late)) == (Status.SETTLED, Additional.PAID_LATE)
    assert decide(facts(**late, accept_late=False)) == (Status.EXPIRED, Additional.PAID_LATE)
    never = dict(now=T0 + timedelta(days=2), seen_msat=100_000, full_seen_at=T0)
    assert decide(facts(**never)) == (Status.INVALID, Additional.NONE)
    assert threshold_msat(100_000, 100) == 99_000
    assert threshold_msat(99_999, 100) == 99_000  # 98,999.01 rounded up: never more tolerance
    assert decide(facts(tolerance_bp=100, seen_msat=99_000, confirmed_msat=99_000,
                        full_seen_at=T0))[0] is Status.SETTLED
