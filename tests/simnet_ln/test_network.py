"""The in-memory network: routing and fees, liquidity, the receiver's checks, refusals,
scripted outcomes and LND's subscription catch-up."""

from __future__ import annotations

import time

import pytest

from satvault.simnet.ln import (
    ChannelSpec,
    FailureReason,
    InvoiceNotOpen,
    InvoiceState,
    LnNetwork,
    LnSimError,
    PaymentRefused,
    PaymentStatus,
    UnknownInvoice,
    UnknownPayment,
)


def test_routed_payment_charges_the_router_fee(net: LnNetwork) -> None:
    inv = net.create_invoice("platform", 150_000, memo="order")
    before = {n: net.balance(n) for n in ("customer2", "router", "platform")}
    p = net.pay("customer2", inv.bolt11)
    assert p.status is PaymentStatus.SUCCEEDED
    assert p.fee_msat == 1000 + 150_000 * 1000 // 1_000_000 == 1150
    assert p.preimage == inv.preimage
    assert [h.to_node for h in p.route] == ["router", "platform"]
    after = {n: net.balance(n) for n in ("customer2", "router", "platform")}
    assert after["customer2"].local_msat == before["customer2"].local_msat - 151_150
    assert after["router"].local_msat == before["router"].local_msat + 1150
    assert after["platform"].local_msat == before["platform"].local_msat + 150_000
    settled = net.lookup_invoice("platform", inv.payment_hash)
    assert settled is not None and settled.state is InvoiceState.SETTLED
    assert settled.amt_paid_msat == 150_000 and settled.settle_index == 1
    assert net.payment("customer2", inv.payment_hash) == p


def test_direct_channel_has_no_fee(net: LnNetwork) -> None:
    inv = net.create_invoice("platform", 42_000)
    p = net.pay("customer1", inv.bolt11)
    assert p.status is PaymentStatus.SUCCEEDED
    assert p.fee_msat == 0 and [h.to_node for h in p.route] == ["platform"]


def test_big_payment_falls_back_to_the_router(net: LnNetwork) -> None:
    # customer1's direct channel holds 0.02 BTC; 0.03 BTC must go through charlie
    inv = net.create_invoice("platform", 3_000_000_000)
    p = net.pay("customer1", inv.bolt11)
    assert p.status is PaymentStatus.SUCCEEDED
    assert [h.to_node for h in p.route] == ["router", "platform"]


@pytest.mark.parametrize("reason", ["no_route", "insufficient_balance",
                                    "incorrect_payment_details", "timeout", "error"])
def test_scripted_failures(net: LnNetwork, reason: str) -> None:
    inv = net.create_invoice("platform", 10_000)
    local = net.balance("customer2").local_msat
    net.script(inv.payment_hash, f"fail:{reason}")
    p = net.pay("customer2", inv.bolt11)
    assert p.status is PaymentStatus.FAILED
    assert p.failure_reason is FailureReason("FAILURE_REASON_" + reason.upper())
    assert p.preimage is None
    assert net.balance("customer2").local_msat == local
    still = net.lookup_invoice("platform", inv.payment_hash)
    assert still is not None and still.state is InvoiceState.OPEN
    retry = net.pay("customer2", inv.bolt11)  # a failed payment may be retried
    assert retry.status is PaymentStatus.SUCCEEDED


def test_script_next_is_per_sender_and_ordered(net: LnNetwork) -> None:
    net.script_next("customer1", "fail:no_route")
    net.script_next("customer1", "fail:timeout")
    a, b, c = (net.create_invoice("platform", 1000) for _ in range(3))
    other = net.pay("customer2", a.bolt11)  # another sender is not affected
    assert other.status is PaymentStatus.SUCCEEDED
    assert net.pay("customer1", b.bolt11).failure_reason is FailureReason.NO_ROUTE
    assert net.pay("customer1", c.bolt11).failure_reason is FailureReason.TIMEOUT
    d = net.create_invoice("platform", 1000)
    assert net.pay("customer1", d.bolt11).status is PaymentStatus.SUCCEEDED


def test_natural_failures(net: LnNetwork) -> None:
    big = net.create_invoice("platform", 100_000_000_000)  # 1 BTC, more than customer2 has
    assert net.pay("customer2", big.bolt11).failure_reason is \
        FailureReason.INSUFFICIENT_BALANCE
    inv = net.create_invoice("platform", 10_000)
    capped = net.pay("customer2", inv.bolt11, fee_limit_msat=500)  # the fee is 1010
    assert capped.failure_reason is FailureReason.NO_ROUTE
    other = LnNetwork(seed="elsewhere")
    try:
        foreign = other.create_invoice("platform", 1000)
        assert net.pay("customer1", foreign.bolt11).failure_reason is FailureReason.NO_ROUTE
    finally:
        other.close()


def test_amountless_needs_an_amount(net: LnNetwork) -> None:
    inv = net.create_invoice("platform", None, memo="tip jar")
    with pytest.raises(PaymentRefused) as err:
        net.pay("customer1", inv.bolt11)
    assert err.value.kind == "amount_required"
    assert "amount must be specified" in err.value.message
    p = net.pay("customer1", inv.bolt11, amount_msat=7_000)
    assert p.status is PaymentStatus.SUCCEEDED and p.value_msat == 7_000
    paid = net.lookup_invoice("platform", inv.payment_hash)
    assert paid is not None and paid.amt_paid_msat == 7_000


def test_underpaying_fails_and_overpaying_is_accepted(net: LnNetwork) -> None:
    inv = net.create_invoice("platform", 10_000)
    short = net.pay("customer1", inv.bolt11, amount_msat=9_999)
    assert short.failure_reason is FailureReason.INCORRECT_PAYMENT_DETAILS
    over = net.pay("customer1", inv.bolt11, amount_msat=12_000)
    assert over.status is PaymentStatus.SUCCEEDED
    paid = net.lookup_invoice("platform", inv.payment_hash)
    assert paid is not None and paid.amt_paid_msat == 12_000


def test_expired_invoice_is_refused(net: LnNetwork) -> None:
    inv = net.create_invoice("platform", 10_000, expiry=60)
    net.advance_time(61)
    with pytest.raises(PaymentRefused) as err:
        net.pay("customer1", inv.bolt11)
    assert err.value.kind == "expired" and "invoice expired" in err.value.message


def test_refusals_for_the_same_hash(net: LnNetwork) -> None:
    inv = net.create_invoice("platform", 10_000)
    net.script(inv.payment_hash, "in_flight")
    first = net.pay("customer1", inv.bolt11)
    assert first.status is PaymentStatus.IN_FLIGHT
    with pytest.raises(PaymentRefused, match="payment is in transition"):
        net.pay("customer1", inv.bolt11)
    net.resolve(inv.payment_hash, "succeed")
    with pytest.raises(PaymentRefused, match="invoice is already paid") as err:
        net.pay("customer1", inv.bolt11)
    assert err.value.kind == "already_paid"
    # another node paying the settled invoice reaches the receiver, which refuses it
    again = net.pay("customer2", inv.bolt11)
    assert again.failure_reason is FailureReason.INCORRECT_PAYMENT_DETAILS
    with pytest.raises(PaymentRefused, match="self-payments not allowed"):
        net.pay("platform", net.create_invoice("platform", 1).bolt11)


def test_canceled_invoice_cannot_be_paid(net: LnNetwork) -> None:
    inv = net.create_invoice("platform", 10_000)
    assert net.cancel_invoice("platform", inv.payment_hash).state is InvoiceState.CANCELED
    net.cancel_invoice("platform", inv.payment_hash)  # idempotent
    p = net.pay("customer1", inv.bolt11)
    assert p.failure_reason is FailureReason.INCORRECT_PAYMENT_DETAILS
    paid = net.create_invoice("platform", 10_000)
    net.pay("customer1", paid.bolt11)
    with pytest.raises(InvoiceNotOpen, match="already settled"):
        net.cancel_invoice("platform", paid.payment_hash)
    with pytest.raises(UnknownInvoice):
        net.cancel_invoice("platform", "00" * 32)


def test_in_flight_holds_liquidity_until_resolved(net: LnNetwork) -> None:
    inv = net.create_invoice("customer2", 50_000)
    before = net.balance("platform")
    net.script_next("platform", "in_flight")
    p = net.pay("platform", inv.bolt11)
    assert p.status is PaymentStatus.IN_FLIGHT and p.fee_msat == 1050
    held = net.balance("platform")
    assert held.local_msat == before.local_msat - 51_050
    assert held.pending_local_msat == 51_050
    done = net.resolve(inv.payment_hash, "fail:timeout")
    assert done.failure_reason is FailureReason.TIMEOUT
    assert net.balance("platform").local_msat == before.local_msat
    with pytest.raises(UnknownPayment):
        net.resolve(inv.payment_hash, "succeed")
    with pytest.raises(LnSimError):
        net.script_next("platform", "explode")


def test_delayed_outcome_and_hang_then_succeed(net: LnNetwork) -> None:
    slow = net.create_invoice("customer1", 1000)
    net.script(slow.payment_hash, "succeed", delay=0.2)
    p = net.pay("platform", slow.bolt11)
    assert p.status is PaymentStatus.IN_FLIGHT and not p.stalled
    assert net.wait_payment("platform", slow.payment_hash).status is PaymentStatus.SUCCEEDED

    hung = net.create_invoice("customer1", 2000)
    net.script_next("platform", "hang_then_succeed", delay=0.3)
    started = time.monotonic()
    h = net.pay("platform", hung.bolt11)
    assert h.status is PaymentStatus.IN_FLIGHT and h.stalled
    final = net.wait_payment("platform", hung.payment_hash)
    assert final.status is PaymentStatus.SUCCEEDED
    assert time.monotonic() - started >= 0.25
    settled = net.lookup_invoice("customer1", hung.payment_hash)
    assert settled is not None and settled.state is InvoiceState.SETTLED


def test_subscription_catch_up_by_index(net: LnNetwork) -> None:
    invs = [net.create_invoice("platform", 1000 + i) for i in range(4)]
    net.pay("customer1", invs[1].bolt11)
    net.pay("customer1", invs[3].bolt11)
    events: list[tuple[str, str]] = []
    backlog, unsubscribe = net.subscribe_invoices(
        "platform", lambda kind, inv: events.append((kind, inv.payment_hash)),
        add_index=2, settle_index=1)
    assert [(k, i.add_index) for k, i in backlog] == [("added", 3), ("added", 4),
                                                      ("settled", 4)]
    assert backlog[1][1].state is InvoiceState.SETTLED  # catch-up shows the current state
    none, unsub2 = net.subscribe_invoices("platform", lambda *_: None)
    assert none == []  # 0 and 0: live events only, as in LND
    unsub2()
    fresh = net.create_invoice("platform", 5)
    net.pay("customer1", invs[0].bolt11)
    assert events == [("added", fresh.payment_hash), ("settled", invs[0].payment_hash)]
    unsubscribe()
    net.create_invoice("platform", 6)
    assert len(events) == 2


def test_custom_topology() -> None:
    n = LnNetwork(nodes=("a", "b"), channels=[ChannelSpec("a", "b", 1_000_000, 0)])
    try:
        inv = n.create_invoice("b", 400_000)
        assert n.pay("a", inv.bolt11).status is PaymentStatus.SUCCEEDED
        back = n.create_invoice("a", 500_000)
        assert n.pay("b", back.bolt11).failure_reason is FailureReason.INSUFFICIENT_BALANCE
    finally:
        n.close()
