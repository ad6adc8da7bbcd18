"""Lightning through the `lnd` adapter against the simulator over HTTP: receiving exactly
once, sending with fee reserves, the outcomes that must never refund, concurrency, internal
settlement and bad input. The ledger check passes after every money test."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from satvault.backends.lightning import PaymentStatus
from satvault.kernel.retrying import retrying
from satvault.ledger.core import TransferSpec
from satvault.ledger.errors import InsufficientFunds
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit_one
from satvault.lightning.errors import (
    AmountRequired,
    InvalidInvoice,
    InvoiceExpired,
    PaymentRefused,
    WrongNetwork,
)
from satvault.lightning.invoices import InvoiceListener, create_invoice
from satvault.lightning.lnurl import decode_lnurl
from satvault.lightning.models import LnInvoice, LnPayment
from satvault.lightning.payments import request_ln_withdrawal, take_off_node
from satvault.payouts.models import Withdrawal
from tests.chainenv import LnEnv
from tests.waiting import eventually

MSAT = 1
SAT = 1000
# BOLT #11's first example: mainnet, expired long ago (it is from 2017).
BOLT11_MAINNET = ("lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5"
                  "rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8"
                  "g6twvus8g6rfwvs8qun0dfjkxaq9qrsgq357wnc5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3y"
                  "ap9us6v52vjjsrvywa6rt52cm9r9zqt8r2t7mlcwspyetp5h2tztugp9lfyql")


async def fund(env: LnEnv, wallet, msat: int) -> None:
    async with env.sessions() as s, s.begin():
        equity = (await ensure_platform_accounts(s, "BTC")).equity.id
    await submit_one(env.sessions, TransferSpec(f"fund:{wallet.id}:{msat}", equity,
                                                wallet.ledger_account_id, msat, "BTC"))


async def own_bill(env: LnEnv, amount_msat: int) -> tuple[Any, dict[str, str]]:
    """The setting of an internal payment through the API: the environment's wallet funded,
    an invoice of ours issued to another user's wallet, and the payer's API key."""
    from satvault.accounts import service as acc
    from satvault.lightning.invoices import create_invoice

    await fund(env, env.wallet, 100_000 * 1000)
    carol = await env.wallet_for("carol@example.com")
    async with env.sessions() as s, s.begin():
        bill = await create_invoice(s, backend=env.runtime.lightning, wallet=carol,
                                    amount_msat=amount_msat)
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
    return bill, {"Authorization": f"Bearer {token}"}


async def pay_out(env: LnEnv, bolt11: str, *, wallet=None, amount_msat=None) -> Withdrawal:
    """The service path the API takes: the node part first, then the unit of work."""
    taken = await take_off_node(env.sessions, wallet=wallet or env.wallet, bolt11=bolt11,
                                amount_msat=amount_msat, settings=env.settings,
                                backend=env.runtime.lightning)

    async def work(s):
        return await request_ln_withdrawal(s, wallet=wallet or env.wallet, bolt11=bolt11,
                                           amount_msat=amount_msat, settings=env.settings,
                                           backend=env.runtime.lightning, taken_off_node=taken)
    return await retrying(env.sessions, work)


def customer_invoice(env: LnEnv, msat: int | None, node: str = "customer2") -> str:
    return env.network.create_invoice(node, msat, memo="withdrawal").bolt11


async def status(env: LnEnv, wd_id: str) -> tuple[str, int | None]:
    async with env.sessions() as s:
        wd = await s.get(Withdrawal, wd_id)
        return wd.status, wd.fee_msat


async def test_invoice_credited_once_with_duplicates_and_a_listener_restart(lnenv: LnEnv):
    env = lnenv
    async with env.sessions() as s, s.begin():
        inv = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                   amount_msat=21_000 * SAT, memo="top-up")
        marker = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                      amount_msat=1_000 * SAT, memo="marker")
    listener = InvoiceListener(env.sessions, env.runtime.lightning, node="lnd")
    task = asyncio.create_task(listener.listen_once())
    # A first listener starts from settle index 0, which replays nothing: pay once it is live.
    await eventually(lambda: env.network.invoice_subscribers("platform") == 1)
    env.network.pay("customer1", inv.bolt11)
    await eventually(lambda: listener.credited == 1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # The same notification again, a restarted listener replaying from its cursor, a sweep.
    assert await listener.handle(inv.payment_hash, 21_000 * SAT, 1) is False
    again = InvoiceListener(env.sessions, env.runtime.lightning, node="lnd")
    replay = asyncio.create_task(again.listen_once())
    # The stream replays from the cursor, then goes live: once a later payment has been
    # credited, everything replayed before it has been handled too.
    env.network.pay("customer1", marker.bolt11)
    await eventually(lambda: again.credited >= 1)
    replay.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await replay
    assert again.credited == 1
    assert await again.sweep() == 0
    assert (await env.balances())["available"] == 22_000 * SAT
    async with env.sessions() as s:
        row = await s.get(LnInvoice, inv.id)
    assert row.status == "paid" and row.paid_msat == 21_000 * SAT
    await env.check()


async def test_payment_success_releases_unused_reserve(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 1_000_000 * SAT)
    wd = await pay_out(env, customer_invoice(env, 200_000 * SAT))
    reserve = max(200_000 * SAT * 5_000 // 1_000_000, 10_000)
    assert (await env.balances())["held"] == 200_000 * SAT + reserve
    report = await env.runtime.payer.step()
    assert report.succeeded == 1
    state, fee = await status(env, wd.id)
    assert state == "confirmed" and 0 < fee <= reserve  # routed via the router: a real fee
    b = await env.balances()
    assert b["held"] == 0 and b["available"] == (1_000_000 - 200_000) * SAT - fee
    await env.check()


@pytest.mark.parametrize("outcome", ["fail:incorrect_payment_details",
                                     "fail:insufficient_balance"])
async def test_definite_failure_voids_the_hold(lnenv: LnEnv, outcome):
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    bolt11 = customer_invoice(env, 100_000 * SAT)
    env.network.script(env.network.decode(bolt11).payment_hash, outcome)
    wd = await pay_out(env, bolt11)
    report = await env.runtime.payer.step()
    assert report.failed == 1
    assert (await status(env, wd.id))[0] == "failed"
    assert await env.balances() == {"available": 500_000 * SAT, "incoming": 0, "held": 0,
                                    "posted": 500_000 * SAT}
    await env.check()


async def test_retryable_failure_is_retried_then_succeeds(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    bolt11 = customer_invoice(env, 50_000 * SAT)
    env.network.script_next("platform", "fail:no_route")
    wd = await pay_out(env, bolt11)
    first = await env.runtime.payer.step()
    assert first.retried == 1 and (await env.balances())["held"] > 0
    second = await env.runtime.payer.step()
    assert second.succeeded == 1
    assert (await status(env, wd.id))[0] == "confirmed"
    async with env.sessions() as s:
        attempts = (await s.execute(select(func.count()).select_from(LnPayment))).scalar()
    assert attempts == 2
    await env.check()


async def node_record(env: LnEnv, payment_hash: str, done: Any) -> None:
    """Wait (5 s at most) until the node's record of ``payment_hash`` satisfies ``done``."""
    for _ in range(50):
        known = await env.runtime.lightning.track_payment(payment_hash)
        if known is not None and done(known):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the node's record of {payment_hash} never got there")


async def _retry_lost_on_the_way(env: LnEnv, msat: int, *, expiry: int = 3600):
    """A withdrawal whose first attempt failed with a reason worth retrying, and whose retry's
    send timed out before the node took it (the node is held on the send): the node's one
    record of the hash is still the first attempt's FAILED."""
    await fund(env, env.wallet, 500_000 * SAT)
    inv = env.network.create_invoice("customer2", msat, memo="retry", expiry=expiry)
    env.network.script_next("platform", "fail:no_route")
    wd = await pay_out(env, inv.bolt11)
    assert (await env.runtime.payer.step()).retried == 1
    gate = env.lnd.hold("POST", "/v2/router/send")
    assert (await env.runtime.payer.step()).unknown == 1  # the send timed out: unknown
    assert await asyncio.to_thread(env.lnd.held.acquire, True, 10)
    known = await env.runtime.lightning.track_payment(inv.payment_hash)
    assert known is not None and known.status is PaymentStatus.FAILED  # the first's record
    return wd, inv, gate


async def test_a_retry_lost_on_the_way_is_not_failed_on_the_first_attempts_record(
        lnenv: LnEnv):
    """Found from outside (stop 42): the retry of a payment whose send timed out was failed
    on the node's record of the first attempt, its hold voided; the node then took the send
    and paid it, and the wallet had the money back. The node keeps one record per hash: a
    FAILED read after an earlier attempt failed may be that attempt's, so the retry stays
    unknown, its money held, until the node records it."""
    env = lnenv
    wd, inv, gate = await _retry_lost_on_the_way(env, 60_000 * SAT)
    for _ in range(2):
        await env.runtime.payer.step()
        assert (await status(env, wd.id))[0] == "broadcast"
        assert (await env.balances())["held"] >= 60_000 * SAT
    gate.set()  # the send reaches the node, which pays it
    await node_record(env, inv.payment_hash, lambda k: k.status is PaymentStatus.SUCCEEDED)
    await env.runtime.payer.step()
    assert (await status(env, wd.id))[0] == "confirmed"
    balances = await env.balances()
    assert balances["held"] == 0 and balances["available"] < 500_000 * SAT - 60_000 * SAT
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"ln_max_attempts": 2}])
async def test_a_retry_that_waited_long_to_be_sent_is_not_released_at_its_first_look(
        lnenv: LnEnv):
    """Found from outside (stop 42, against the fix above): the hour after which a send lost
    on the way is given up was counted from the attempt row's creation, so a retry that
    waited two hours to be sent (a frozen wallet, an approval, the worker down) was failed at
    its first look while the node took its send and paid it. It is counted from the send."""
    from datetime import timedelta

    from sqlalchemy import update

    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    inv = env.network.create_invoice("customer2", 60_000 * SAT, expiry=86_400)
    env.network.script_next("platform", "fail:no_route")
    wd = await pay_out(env, inv.bolt11)
    assert (await env.runtime.payer.step()).retried == 1
    async with env.sessions() as s, s.begin():  # it waited two hours to be sent
        retry = (await s.execute(select(LnPayment).where(LnPayment.attempt == 2))).scalar_one()
        await s.execute(update(LnPayment).where(LnPayment.id == retry.id).values(
            created_at=retry.created_at - timedelta(hours=2)))
    gate = env.lnd.hold("POST", "/v2/router/send")
    try:
        assert (await env.runtime.payer.step()).unknown == 1
        await env.runtime.payer.step()
        assert (await status(env, wd.id))[0] == "broadcast"  # not released: it may be paid
        assert (await env.balances())["held"] >= 60_000 * SAT
    finally:
        gate.set()
    await node_record(env, inv.payment_hash, lambda k: k.status is PaymentStatus.SUCCEEDED)
    await env.runtime.payer.step()
    assert (await status(env, wd.id))[0] == "confirmed"
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"ln_max_attempts": 2}])
async def test_a_retrys_own_failure_after_its_send_timed_out_releases_the_money(
        lnenv: LnEnv):
    """Found from outside (stop 42, against the fix above): a retry whose send timed out and
    which the node then failed on its own record was held until its invoice expired, a date
    the payee sets (ten years). The node numbers its records: one other than the first
    attempt's is this attempt's own failure, final at once."""
    env = lnenv
    wd, inv, gate = await _retry_lost_on_the_way(env, 60_000 * SAT, expiry=10 * 365 * 86400)
    env.network.script(inv.payment_hash, "fail:incorrect_payment_details")
    gate.set()  # the send reaches the node, which fails it: a new record
    await node_record(env, inv.payment_hash, lambda k: k.failure_reason
                      == "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS")
    await env.runtime.payer.step()
    assert (await status(env, wd.id))[0] == "failed"
    assert (await env.balances())["held"] == 0
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"ln_payer_concurrency": 2}])
async def test_payments_waiting_on_an_earlier_attempts_record_take_no_ones_turn(
        lnenv: LnEnv):
    """Found from outside (stop 42): such waiting payments were asked about first at every
    tick, and as many of them as the payer's concurrency took every turn: nobody else's
    payment in flight was looked at again, a success at the node never booked."""
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    honest = customer_invoice(env, 5_000 * SAT)
    env.network.script(env.network.decode(honest).payment_hash, "hang_then_succeed",
                       delay=3)
    wd = await pay_out(env, honest)
    assert (await env.runtime.payer.step()).unknown == 1  # no answer in time: unknown
    bills = [env.network.create_invoice("customer2", 10_000 * SAT) for _ in range(2)]
    for bill in bills:
        env.network.script(bill.payment_hash, "fail:no_route")
    waiting = [await pay_out(env, bill.bolt11) for bill in bills]
    assert (await env.runtime.payer.step()).retried == 2
    gate = env.lnd.hold("POST", "/v2/router/send")
    try:
        assert (await env.runtime.payer.step()).unknown == 2  # both retries lost on the way
        await env.runtime.payer.step()  # the honest one asked about: still in flight
        await asyncio.sleep(3)  # now it has succeeded at the node
        for _ in range(4):
            await env.runtime.payer.step()
        assert (await status(env, wd.id))[0] == "confirmed"
        for stuck in waiting:
            assert (await status(env, stuck.id))[0] == "broadcast"
    finally:
        gate.set()


@pytest.mark.parametrize("settings_overrides", [{"ln_max_attempts": 2}])
async def test_a_retry_lost_for_good_fails_once_its_invoice_has_expired(lnenv: LnEnv,
                                                                        clock):
    """The same, the send never taken: once the invoice has expired (and the margin for the
    node's clock passed) no send of it can be paid any more; the FAILED is final (the last
    attempt: no retry), the money back."""
    from satvault.lightning.payments import EXPIRY_MARGIN_SECONDS

    env = lnenv
    wd, inv, gate = await _retry_lost_on_the_way(env, 60_000 * SAT, expiry=600)
    await env.runtime.payer.step()
    assert (await status(env, wd.id))[0] == "broadcast"
    later = 600 + EXPIRY_MARGIN_SECONDS + 5
    env.network.advance_time(later)  # the node's clock: the invoice has expired there too
    clock.advance(seconds=later)
    await env.runtime.payer.step()
    assert (await status(env, wd.id))[0] == "failed"
    assert (await env.balances()) == {"available": 500_000 * SAT, "incoming": 0, "held": 0,
                                      "posted": 500_000 * SAT}
    gate.set()  # a send that turns up now is refused by the node: the invoice expired
    await asyncio.sleep(0.5)
    known = await env.runtime.lightning.track_payment(inv.payment_hash)
    assert known is not None and known.status is not PaymentStatus.SUCCEEDED
    await env.check()


async def test_an_invoice_whose_payment_failed_can_be_paid_again(lnenv: LnEnv):
    """Found from outside (stop 42): a new withdrawal of an invoice whose earlier payment
    failed met that payment's row (attempt 1 twice) and was told the server was busy."""
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    bolt11 = customer_invoice(env, 30_000 * SAT)
    env.network.script_next("platform", "fail:incorrect_payment_details")
    first = await pay_out(env, bolt11)
    assert (await env.runtime.payer.step()).failed == 1
    assert (await status(env, first.id))[0] == "failed"
    again = await pay_out(env, bolt11)
    assert (await env.runtime.payer.step()).succeeded == 1
    assert (await status(env, again.id))[0] == "confirmed"
    await env.check()


async def test_long_in_flight_then_success_is_never_refunded(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    bolt11 = customer_invoice(env, 70_000 * SAT)
    payment_hash = env.network.decode(bolt11).payment_hash
    env.network.script(payment_hash, "in_flight")
    wd = await pay_out(env, bolt11)
    for _ in range(3):  # however many times the payer looks, it waits
        await env.runtime.payer.step()
        assert (await status(env, wd.id))[0] == "broadcast"
        assert (await env.balances())["held"] > 0
    env.network.resolve(payment_hash, "succeed")
    await env.runtime.payer.step()
    assert (await status(env, wd.id))[0] == "confirmed"
    assert (await env.balances())["held"] == 0
    await env.check()


async def test_timeout_then_success_later_is_never_refunded(lnenv: LnEnv):
    """LNbits CVE-2024-34694: a send that times out must not be treated as failed."""
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    bolt11 = customer_invoice(env, 80_000 * SAT)
    payment_hash = env.network.decode(bolt11).payment_hash
    # The node settles it later, whenever that is: here when the test says so.
    env.network.script(payment_hash, "hang_then_succeed", delay=3600)
    wd = await pay_out(env, bolt11)
    report = await env.runtime.payer.step()  # the stream goes quiet: we time out
    assert report.unknown == 1 and report.failed == 0
    assert (await status(env, wd.id))[0] == "broadcast"
    held = (await env.balances())["held"]
    assert held >= 80_000 * SAT
    await env.runtime.payer.step()  # node still says in flight: never a void
    assert (await env.balances())["held"] == held
    assert (await status(env, wd.id))[0] == "broadcast"
    env.network.resolve(payment_hash, "succeed")
    await env.runtime.payer.step()
    assert (await status(env, wd.id))[0] == "confirmed"
    b = await env.balances()
    assert b["held"] == 0 and b["available"] < (500_000 - 80_000) * SAT + 1
    await env.check()


async def test_fifty_concurrent_payments_never_overdraw(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 1_000_000 * SAT)
    invoices = [customer_invoice(env, 45_000 * SAT, node="customer1") for _ in range(50)]

    async def one(b):
        try:
            await pay_out(env, b)
            return True
        except InsufficientFunds:
            return False

    ok = await asyncio.gather(*(one(b) for b in invoices))
    per = 45_000 * SAT + max(45_000 * SAT * 5_000 // 1_000_000, 10_000)
    assert sum(ok) == 1_000_000 * SAT // per
    assert (await env.balances())["available"] >= 0
    await env.runtime.payer.step()
    b = await env.balances()
    assert b["held"] == 0 and b["available"] >= 0
    await env.check()


async def test_same_invoice_paid_twice_concurrently_is_paid_once(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    bolt11 = customer_invoice(env, 30_000 * SAT)

    async def one():
        try:
            return await pay_out(env, bolt11)
        except PaymentRefused:
            return None

    results = await asyncio.gather(one(), one(), one())
    assert sum(r is not None for r in results) == 1
    with pytest.raises(PaymentRefused):
        await pay_out(env, bolt11)
    await env.runtime.payer.step()
    async with env.sessions() as s:
        paid = (await s.execute(select(func.count()).select_from(LnPayment).where(
            LnPayment.status == "succeeded"))).scalar()
    assert paid == 1
    await env.check()


async def test_internal_payment_settles_in_the_ledger_and_kills_the_invoice(lnenv: LnEnv):
    env = lnenv
    bob = await env.wallet_for("bob@example.com")
    await fund(env, env.wallet, 100_000 * SAT)
    async with env.sessions() as s, s.begin():
        inv = await create_invoice(s, backend=env.runtime.lightning, wallet=bob,
                                   amount_msat=40_000 * SAT, memo="from alice")
    wd = await pay_out(env, inv.bolt11)
    assert wd.method == "internal" and wd.fee_msat == 0
    assert (await env.balances())["available"] == 60_000 * SAT
    assert (await env.balances(bob))["available"] == 40_000 * SAT
    async with env.sessions() as s:
        assert (await s.get(LnInvoice, inv.id)).internal is True
    outside = env.network.pay("customer1", inv.bolt11)  # cancelled on the node: it fails
    assert outside.status.value.upper() == "FAILED"
    assert (await env.balances(bob))["available"] == 40_000 * SAT  # and nothing moved twice
    async with env.sessions() as s, s.begin():
        own = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                   amount_msat=1_000 * SAT)
    with pytest.raises(PaymentRefused, match="own wallet"):
        await pay_out(env, own.bolt11)
    await env.check()


async def test_bad_invoices_hold_nothing(lnenv: LnEnv, clock):
    env = lnenv
    await fund(env, env.wallet, 100_000 * SAT)
    expired = env.network.create_invoice("customer1", 1_000 * SAT, expiry=1).bolt11
    clock.advance(2)
    cases = [
        ("lnbcrt1nonsense", None, InvalidInvoice),
        (BOLT11_MAINNET, None, WrongNetwork),
        (expired, None, InvoiceExpired),
        (customer_invoice(env, None), None, AmountRequired),
        (customer_invoice(env, 1_000 * SAT), 2_000 * SAT, AmountRequired),
        (customer_invoice(env, 20_000_000_000), None, PaymentRefused),
        (customer_invoice(env, 500_000 * SAT), None, InsufficientFunds),
    ]
    for bolt11, amount, exc in cases:
        with pytest.raises(exc):
            await pay_out(env, bolt11, amount_msat=amount)
    assert (await env.balances())["held"] == 0
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(LnPayment))).scalar() == 0
    await env.check()


async def test_daily_limit_counts_lightning_and_internal_withdrawals(lnenv: LnEnv):
    from satvault.payouts.errors import InvalidWithdrawal

    env = lnenv
    env.settings.withdrawal_daily_limit_msat = 100_000 * SAT
    await fund(env, env.wallet, 1_000_000 * SAT)
    await pay_out(env, customer_invoice(env, 60_000 * SAT))
    with pytest.raises(InvalidWithdrawal, match="24-hour"):
        await pay_out(env, customer_invoice(env, 50_000 * SAT))
    await pay_out(env, customer_invoice(env, 40_000 * SAT))  # exactly at the limit
    assert (await env.balances())["held"] > 0
    await env.check()


async def test_failed_internal_payment_leaves_the_invoice_payable_from_outside(lnenv: LnEnv):
    env = lnenv
    bob = await env.wallet_for("bob@example.com")
    async with env.sessions() as s, s.begin():
        inv = await create_invoice(s, backend=env.runtime.lightning, wallet=bob,
                                   amount_msat=40_000 * SAT, memo="for bob")
    with pytest.raises(InsufficientFunds):
        await pay_out(env, inv.bolt11)  # alice has nothing
    paid = env.network.pay("customer1", inv.bolt11)  # so someone outside pays it instead
    assert paid.status.value.upper() == "SUCCEEDED"
    listener = InvoiceListener(env.sessions, env.runtime.lightning, node="lnd")
    assert await listener.sweep() == 1
    assert (await env.balances(bob))["available"] == 40_000 * SAT
    await env.check()


async def test_a_payment_queued_before_a_freeze_waits_until_the_wallet_is_unfrozen(
        lnenv: LnEnv):
    """Found from outside (a sibling of the approvals' freeze): a payment queued before its
    wallet was frozen was still sent by the payer. It waits, held, until the unfreeze."""
    from satvault.kyc import service as kyc

    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    wd = await pay_out(env, customer_invoice(env, 70_000 * SAT))
    async with env.sessions() as s, s.begin():
        await kyc.freeze(s, wallet_id=env.wallet.id, reason="court order", actor="ops")
    assert (await env.runtime.payer.step()).sent == 0
    assert (await status(env, wd.id))[0] == "pending"
    assert (await env.balances())["held"] >= 70_000 * SAT
    async with env.sessions() as s, s.begin():
        await kyc.unfreeze(s, wallet_id=env.wallet.id, reason="lifted", actor="ops")
    assert (await env.runtime.payer.step()).succeeded == 1
    assert (await status(env, wd.id))[0] == "confirmed"
    await env.check()


async def _redeem_a_link(env: LnEnv, *, amount_msat: int, pr: str) -> dict[str, Any]:
    """The environment's wallet makes a withdraw link for ``amount_msat`` through the API;
    whoever holds it (its k1 is public) redeems it with ``pr``: the callback's answer."""
    from tests.chainenv import api_client

    auth = await _payers_key(env)
    async with api_client(env) as c:
        v = await c.post(f"/api/v1/wallets/{env.wallet.id}/lnurl-withdraw", headers=auth,
                         json={"amount_msat": amount_msat, "description": "gift"})
        assert v.status_code == 201, v.text
        link = urlsplit(decode_lnurl(v.json()["lnurl"])).path
        k1 = (await c.get(link)).json()["k1"]
        answer: dict[str, Any] = (await c.get(f"{link}/callback",
                                              params={"k1": k1, "pr": pr})).json()
    return answer


async def _payers_key(env: LnEnv) -> dict[str, str]:
    from satvault.accounts import service as acc

    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("refusal", ["daily-limit", "tier-limit", "per-payment-limit"])
async def test_a_refused_internal_payment_leaves_the_payees_invoice_payable(lnenv: LnEnv,
                                                                          refusal):
    """Found from outside: paying another wallet's invoice of ours takes it off the node
    before the unit of work, so a payer the unit of work then refused (over a limit) had
    killed the payee's invoice while the API answered 422; anyone with a balance could kill
    any merchant's invoice, again and again. Every refusal that needs no lock is now checked
    before the invoice leaves the node: the API's fast path, the general path (an amountless
    invoice with an amount) alike."""
    from tests.chainenv import api_client

    env = lnenv
    amount = None
    if refusal == "daily-limit":
        env.settings.withdrawal_daily_limit_msat = 5_000 * SAT
    elif refusal == "tier-limit":
        limits = {tier: dict(rails) for tier, rails in env.settings.kyc_tier_limits_msat.items()}
        limits[0]["internal"] = [5_000 * SAT, *limits[0]["internal"][1:]]
        env.settings.kyc_tier_limits_msat = limits
    else:
        env.settings.ln_max_payment_msat = 5_000 * SAT
        amount = 20_000 * SAT  # an amountless invoice: the general path decides
    await fund(env, env.wallet, 100_000 * SAT)
    bob = await env.wallet_for("bob@example.com")
    async with env.sessions() as s, s.begin():
        bill = await create_invoice(s, backend=env.runtime.lightning, wallet=bob,
                                    amount_msat=None if amount else 20_000 * SAT,
                                    memo="bob's order")
    auth = await _payers_key(env)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**auth, "Idempotency-Key": refusal},
                         json={"destination": bill.bolt11,
                               **({"amount_msat": amount} if amount else {})})
    assert r.status_code in (422, 403), r.text
    # Bob's customer pays the invoice from outside, as intended.
    paid = env.network.pay("customer1", bill.bolt11, amount_msat=amount)
    assert paid.status.value.upper() == "SUCCEEDED", paid
    await env.check()


async def test_a_refused_voucher_redemption_leaves_the_invoice_payable(lnenv: LnEnv):
    """Found from outside: whoever holds an LNURL-withdraw link (its k1 is public) submitted
    another wallet's invoice of ours for more than the link pays; the callback refused it,
    after taking the invoice off the node. The link's range is checked first now."""

    env = lnenv
    await fund(env, env.wallet, 100_000 * SAT)
    bob = await env.wallet_for("bob@example.com")
    async with env.sessions() as s, s.begin():
        bill = await create_invoice(s, backend=env.runtime.lightning, wallet=bob,
                                    amount_msat=20_000 * SAT, memo="bob's order")
    answer = await _redeem_a_link(env, amount_msat=1_000 * SAT, pr=bill.bolt11)
    assert answer["status"] == "ERROR", answer
    paid = env.network.pay("customer1", bill.bolt11)
    assert paid.status.value.upper() == "SUCCEEDED", (answer, paid)
    await env.check()


async def test_the_owner_of_a_withdraw_link_never_approves_its_redemption(lnenv: LnEnv):
    """Found from outside: a withdraw link's redemption recorded no initiator, so the
    wallet's owner, who made the link, could approve what it paid out alone."""
    from satvault.withdrawals.policy import approvals
    from satvault.withdrawals.policy.errors import NotAnApprover
    from tests.policy.support import make_live, people

    env = lnenv
    owner = env.wallet.owner_id
    who = await people(env.sessions, initiator=owner)  # the owner is a treasury approver
    await make_live(env.sessions, who, [
        {"name": "lightning", "action": "require_approval", "approvals": 1,
         "group": "treasury", "rails": ["lightning"], "min_amount_msat": 1_000 * SAT}])
    await fund(env, env.wallet, 100_000 * SAT)
    answer = await _redeem_a_link(env, amount_msat=20_000 * SAT,
                                  pr=customer_invoice(env, 20_000 * SAT))
    assert answer["status"] == "OK", answer
    async with env.sessions() as s:
        wd = (await s.execute(select(Withdrawal))).scalar_one()
    assert wd.status == "awaiting_approval"
    with pytest.raises(NotAnApprover, match="initiator"):
        async with env.sessions() as s, s.begin():
            await approvals.approve_withdrawal(s, withdrawal_id=wd.id, approver=owner,
                                               settings=env.settings)
    assert (await env.runtime.payer.step()).sent == 0
    await env.check()


async def test_an_invoice_paid_from_outside_on_core_lightning_is_not_paid_again_inside(
        lnenv: LnEnv):
    """Found from outside: on Core Lightning, taking one of our invoices off the node did
    nothing, quietly, when it had just been paid from outside (its credit not booked yet),
    so a payer inside settled it again and the node's settlement was then dropped as
    already credited: the outside payment belonged to nobody. It is refused, as on LND."""
    from satvault.backends.cln import ClnBackend
    from satvault.simnet.ln.cln_rpc import ClnRpcServer

    env = lnenv
    with ClnRpcServer(env.network, node="platform") as server:
        cln = ClnBackend(str(server.path))
        carol = await env.wallet_for("carol@example.com")
        await fund(env, env.wallet, 100_000 * SAT)
        async with env.sessions() as s, s.begin():
            bill = await create_invoice(s, backend=cln, wallet=carol, amount_msat=5_000 * SAT)
        assert env.network.pay("customer1", bill.bolt11).status.value.upper() == "SUCCEEDED"
        with pytest.raises(PaymentRefused, match="off the node"):
            await take_off_node(env.sessions, wallet=env.wallet, bolt11=bill.bolt11,
                                amount_msat=None, settings=env.settings, backend=cln)
        assert await InvoiceListener(env.sessions, cln, node="cln").sweep() == 1
        await cln.close()
    assert (await env.balances(carol))["available"] == 5_000 * SAT
    assert (await env.balances())["available"] == 100_000 * SAT
    await env.check()


def test_destination_kinds():
    from satvault.withdrawals.service import destination_kind

    assert destination_kind("alice@127.0.0.1:8177") == "lnurl"
    assert destination_kind("Alice@Example.com") == "lnurl"
    assert destination_kind("LNURL1DP68GURN8GHJ7UM9WFMXJCM99E3K7MF0V9CXJ0M385EKVCENXC6R2C35"
                            "XVUKXEFCV5MKVV34X5EKZD3EV56NYD3HXQURZEPEXEJXXEPNXSCRVWFNV9NXZCN9"
                            "XQ6XYEFHVGCXXCMYXYMNSERXFQ5FNS") == "lnurl"
    assert destination_kind("https://shop.example/pay?lightning=LNURL1XYZ") == "lnurl"
    assert destination_kind("lightning:lnbcrt10u1p") == "bolt11"
    assert destination_kind("bcrt1qcr8te4kr609gcawutmrza0j4xv80jy8zeqchgx") == "onchain"
    assert destination_kind("bitcoin:bcrt1qcr8te4kr609gcawutmrza0j4xv80jy8zeqchgx") == "onchain"


async def test_bounded_sweeps_take_turns_through_all_open_invoices(lnenv: LnEnv):
    """The listener's periodic sweep asks the node about at most ``limit`` open invoices per
    call, continuing where it stopped, so its cost does not grow with the open invoices and
    every invoice still gets its turn."""
    env = lnenv
    bob = await env.wallet_for("bob@example.com")
    async with env.sessions() as s, s.begin():
        invs = [await create_invoice(s, backend=env.runtime.lightning, wallet=bob,
                                     amount_msat=(1_000 + i) * SAT, memo=f"n{i}")
                for i in range(5)]
    for inv in invs:  # paid while nobody listens to the stream
        env.network.pay("customer1", inv.bolt11)
    listener = InvoiceListener(env.sessions, env.runtime.lightning, node="lnd")
    calls: list[str] = []
    real = env.runtime.lightning.lookup_invoice

    async def counting(payment_hash: str):
        calls.append(payment_hash)
        return await real(payment_hash)

    env.runtime.lightning.lookup_invoice = counting  # type: ignore[method-assign]
    try:
        credited = [await listener.sweep(limit=2) for _ in range(3)]
    finally:
        env.runtime.lightning.lookup_invoice = real  # type: ignore[method-assign]
    assert credited == [2, 2, 1] and len(calls) == 5  # 2 + 2 + 1: never more than the limit
    assert len(set(calls)) == 5
    assert (await env.balances(bob))["available"] == sum(1_000 + i for i in range(5)) * SAT
    await env.check()


async def test_a_lightning_address_invoice_on_core_lightning_commits_to_its_metadata(
        lnenv: LnEnv):
    """Core Lightning commits to a description hash only from the text (``deschashonly``):
    the adapter is handed the text and sends it so, and the invoice a Lightning Address
    callback answers commits to the metadata, as on LND (it answered an error before)."""
    import hashlib

    import bolt11

    from satvault.backends.cln import ClnBackend
    from satvault.lightning.lnurl_service import (
        address_invoice,
        address_metadata,
        claim_address,
        host,
    )
    from satvault.simnet.ln.cln_rpc import ClnRpcServer

    env = lnenv
    carol = await env.wallet_for("carol@example.com")
    async with env.sessions() as s, s.begin():
        await claim_address(s, wallet=carol, username="carol", actor="test")
    with ClnRpcServer(env.network, node="platform") as server:
        cln = ClnBackend(str(server.path))
        pr = await address_invoice(env.sessions, backend=cln, settings=env.settings,
                                   username="carol", amount_msat=21_000, comment="gm")
        await cln.close()
    metadata = address_metadata("carol", host(env.settings))
    decoded = bolt11.decode(pr)
    async with env.sessions() as s:
        row = (await s.execute(select(LnInvoice).where(
            LnInvoice.bolt11 == pr))).scalar_one()
    assert int(decoded.amount_msat) == 21_000 and row.wallet_id == carol.id
    assert row.description_hash == decoded.description_hash
    assert decoded.description is None
    assert decoded.description_hash == hashlib.sha256(metadata.encode()).hexdigest()


@pytest.mark.parametrize("forged", ["preimage", "fee", "amount"])
async def test_a_success_the_node_reports_falsely_is_not_booked(lnenv: LnEnv, forged: str):
    """Found from outside: a node (or what stands between it and satvault) reporting success
    with a fee of -900,000 msat got the withdrawal confirmed, the wallet charged 10% of it,
    and a preimage of another hash stored as its proof. A success whose preimage does not
    hash to the payment hash, whose fee is negative or whose amount is another is not
    booked: the payment stays unknown, its money held, and a review item tells a person."""
    from satvault.onchain.models import ReviewItem

    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    bolt11 = customer_invoice(env, 60_000 * SAT)
    env.network.script(env.network.decode(bolt11).payment_hash, f"forge:{forged}")
    wd = await pay_out(env, bolt11)
    before = await env.balances()
    for _ in range(3):  # sent, then asked about again: never believed
        report = await env.runtime.payer.step()
        assert report.succeeded == 0 and report.failed == 0, report
    assert (await status(env, wd.id))[0] == "broadcast"
    assert await env.balances() == before and before["held"] > 60_000 * SAT
    async with env.sessions() as s:
        items = (await s.execute(select(ReviewItem).where(
            ReviewItem.kind == "ln_payment_unproven"))).scalars().all()
        payment = (await s.execute(select(LnPayment))).scalar_one()
    assert len(items) == 1 and wd.id in items[0].details, items
    assert payment.status == "unknown" and payment.preimage is None
    assert "success not booked" in (payment.failure_reason or "")
    await env.check()
