"""The pure core, value in, value out: no database here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from satvault.ledger.core import (
    Account,
    AccountKind,
    Balances,
    FailedTransfer,
    HoldState,
    Result,
    TransferKind,
    TransferSpec,
    available,
    plan_transfers,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MAX = 2**63 - 1
WORLD = Account(1, "BTC", AccountKind.EXTERNAL)
ALICE = Account(2, "BTC", AccountKind.CUSTOMER_WALLET, debits_must_not_exceed_credits=True,
                balances=Balances(credits_posted=1000))
BOB = Account(3, "BTC", AccountKind.CUSTOMER_WALLET, debits_must_not_exceed_credits=True)
EUR = Account(4, "EUR", AccountKind.CUSTOMER_WALLET, debits_must_not_exceed_credits=True)
ACCOUNTS = {a.id: a for a in (WORLD, ALICE, BOB, EUR)}


def plan(*specs, existing=None, failed=None, now=NOW, accounts=ACCOUNTS):
    return plan_transfers(list(specs), accounts=accounts, existing=existing or {},
                          failed=failed or {}, now=now, max_amount=MAX)


def pay(tid, amount, *, debit=2, credit=3, **kw):
    return TransferSpec(id=tid, debit_account_id=debit, credit_account_id=credit,
                        amount=amount, asset=kw.pop("asset", "BTC"), **kw)


def test_single_transfer_moves_posted_balances():
    p = plan(pay("t1", 400))
    assert [o.result for o in p.outcomes] == [Result.CREATED]
    assert p.deltas == {2: Balances(debits_posted=400), 3: Balances(credits_posted=400)}
    t = p.inserts[0]
    assert t.debit_after == Balances(debits_posted=400, credits_posted=1000)
    assert t.credit_after == Balances(credits_posted=400)


def test_overdraft_refused_and_remembered():
    p = plan(pay("t1", 1001))
    assert p.outcomes[0].result is Result.EXCEEDS_CREDITS
    assert p.inserts == () and p.deltas == {}
    assert p.failures == (FailedTransfer("t1", Result.EXCEEDS_CREDITS),)
    again = plan(pay("t1", 5), failed={"t1": p.failures[0]})
    assert again.outcomes[0].result is Result.ID_ALREADY_FAILED
    assert "exceeds_credits" in again.outcomes[0].detail


def test_same_id_twice_in_a_batch_lands_once():
    p = plan(pay("t1", 100), pay("t1", 100))
    assert [o.result for o in p.outcomes] == [Result.CREATED, Result.EXISTS]
    assert p.deltas[2] == Balances(debits_posted=100)


def test_existing_id_with_different_field_is_named():
    first = plan(pay("t1", 100)).inserts[0]
    for spec, result in [
        (pay("t1", 101), Result.EXISTS_WITH_DIFFERENT_AMOUNT),
        (pay("t1", 100, credit=1), Result.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID),
        (pay("t1", 100, code="x"), Result.EXISTS_WITH_DIFFERENT_CODE),
        (pay("t1", 100), Result.EXISTS),
    ]:
        assert plan(spec, existing={"t1": first}).outcomes[0].result is result


def test_two_phase_partial_post_releases_rest():
    hold = plan(pay("h", 600, kind=TransferKind.PENDING)).inserts[0]
    after_hold = {**ACCOUNTS, 2: Account(2, "BTC", AccountKind.CUSTOMER_WALLET, True,
                                         balances=Balances(0, 1000, 600, 0)),
                  3: Account(3, "BTC", AccountKind.CUSTOMER_WALLET, True,
                             balances=Balances(0, 0, 0, 600))}
    assert available(after_hold[2]) == 400
    p = plan(TransferSpec("p", kind=TransferKind.POST, pending_id="h", amount=250),
             existing={"h": hold}, accounts=after_hold)
    assert p.outcomes[0].result is Result.CREATED
    assert p.deltas[2] == Balances(debits_posted=250, debits_pending=-600)
    assert p.hold_updates == {"h": HoldState.POSTED}
    twice = plan(TransferSpec("p2", kind=TransferKind.VOID, pending_id="h"),
                 existing={"h": hold.__class__(**{**_fields(hold), "state": HoldState.POSTED})},
                 accounts=after_hold)
    assert twice.outcomes[0].result is Result.PENDING_TRANSFER_ALREADY_POSTED


def _fields(t):
    return {f: getattr(t, f) for f in t.__slots__}


def test_post_more_than_held_or_after_expiry_refused():
    hold = plan(pay("h", 600, kind=TransferKind.PENDING, timeout_seconds=60)).inserts[0]
    assert hold.expires_at == NOW + timedelta(seconds=60)
    accts = {**ACCOUNTS, 2: Account(2, "BTC", AccountKind.CUSTOMER_WALLET, True,
                                    balances=Balances(0, 1000, 600, 0)),
             3: Account(3, "BTC", AccountKind.CUSTOMER_WALLET, True,
                        balances=Balances(0, 0, 0, 600))}
    over = plan(TransferSpec("p", kind=TransferKind.POST, pending_id="h", amount=601),
                existing={"h": hold}, accounts=accts)
    assert over.outcomes[0].result is Result.EXCEEDS_PENDING_TRANSFER_AMOUNT
    late = plan(TransferSpec("p", kind=TransferKind.POST, pending_id="h"),
                existing={"h": hold}, accounts=accts, now=NOW + timedelta(seconds=61))
    assert late.outcomes[0].result is Result.PENDING_TRANSFER_EXPIRED
    early = plan(TransferSpec("x", kind=TransferKind.EXPIRE, pending_id="h"),
                 existing={"h": hold}, accounts=accts)
    assert early.outcomes[0].result is Result.PENDING_TRANSFER_NOT_EXPIRED
    due = plan(TransferSpec("x", kind=TransferKind.EXPIRE, pending_id="h"),
               existing={"h": hold}, accounts=accts, now=NOW + timedelta(seconds=60))
    assert due.outcomes[0].result is Result.CREATED
    assert due.hold_updates == {"h": HoldState.EXPIRED}


def test_linked_chain_is_all_or_nothing():
    p = plan(pay("a", 500, linked=True), pay("b", 600), pay("c", 100))
    assert [o.result for o in p.outcomes] == [
        Result.LINKED_EVENT_FAILED, Result.EXCEEDS_CREDITS, Result.CREATED]
    assert [t.id for t in p.inserts] == ["c"]
    assert p.deltas[2] == Balances(debits_posted=100)


def test_open_chain_fails_whole():
    p = plan(pay("a", 1), pay("b", 1, linked=True))
    assert [o.result for o in p.outcomes] == [Result.CREATED, Result.LINKED_EVENT_CHAIN_OPEN]


def test_invalid_inputs():
    cases = [
        (pay("", 1), Result.ID_MUST_NOT_BE_EMPTY),
        (pay("x" * 129, 1), Result.ID_TOO_LONG),
        (pay("z", 0), Result.AMOUNT_MUST_BE_POSITIVE),
        (pay("n", -5), Result.AMOUNT_MUST_BE_POSITIVE),
        (pay("big", MAX + 1), Result.AMOUNT_OUT_OF_RANGE),
        (pay("same", 1, credit=2), Result.ACCOUNTS_MUST_BE_DIFFERENT),
        (pay("u", 1, credit=99), Result.CREDIT_ACCOUNT_NOT_FOUND),
        (pay("u2", 1, debit=98), Result.DEBIT_ACCOUNT_NOT_FOUND),
        (pay("mix", 1, credit=4), Result.ASSET_MISMATCH),
        (pay("mix2", 1, asset="EUR"), Result.ASSET_MISMATCH),
        (pay("to", 1, timeout_seconds=5), Result.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        (TransferSpec("nopend", kind=TransferKind.POST), Result.PENDING_ID_REQUIRED),
        (TransferSpec("nf", kind=TransferKind.VOID, pending_id="nope"),
         Result.PENDING_TRANSFER_NOT_FOUND),
    ]
    for spec, expected in cases:
        p = plan(spec)
        assert p.outcomes[0].result is expected, spec
        assert p.inserts == () and p.deltas == {} and p.failures == ()


def test_overflow_is_refused():
    full = {**ACCOUNTS, 3: Account(3, "BTC", AccountKind.CUSTOMER_WALLET, True,
                                   balances=Balances(credits_posted=MAX))}
    p = plan(pay("o", 1, debit=1), accounts=full)
    assert p.outcomes[0].result is Result.OVERFLOWS_BALANCE


def test_platform_fee_rounds_down_for_the_merchant():
    import pytest

    from satvault.ledger.platform import platform_fee

    assert platform_fee(30_000_000, 100) == 300_000
    assert platform_fee(9_999, 1) == 0  # less than one msat of fee: none
    assert platform_fee(10_001, 1) == 1
    assert platform_fee(0, 100) == 0
    with pytest.raises(ValueError):
        platform_fee(-1, 100)
