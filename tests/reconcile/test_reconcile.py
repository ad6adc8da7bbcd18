"""The three-way reconciliation: clean books say nothing; each kind of difference, injected
the way it would really happen (a payment the node has and the ledger lacks, a credit with no
payment, a withdrawal whose hold disagrees with it, a payment our records failed that the node
made), is named row by row, kept as an incident, raised for a person once it persists, and
resolved when it goes away; nothing is corrected. Through the service, the CLI and the API."""

from __future__ import annotations

import contextlib
import json

from sqlalchemy import select, text, update

from satvault.accounts import service as acc
from satvault.backends.lightning import PaymentStatus
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit_one
from satvault.lightning.invoices import InvoiceListener, create_invoice
from satvault.lightning.models import LnPayment
from satvault.onchain.models import ReviewItem
from satvault.payouts.models import Withdrawal
from satvault.reconcile import reconcile_once
from satvault.reconcile.models import ReconciliationIncident
from tests.chainenv import LnEnv, api_client
from tests.lightning.test_lightning import customer_invoice, fund, pay_out
from tests.test_cli import last_json, sv_here

SAT = 1000


async def run(env: LnEnv, *, deep: bool = True):
    return await reconcile_once(env.sessions, env.runtime.backend, env.runtime.lightning,
                                deep=deep)


def named(report) -> list[tuple[str, str, str]]:
    return sorted((d.way, d.kind, d.subject) for d in report.differences)


async def test_clean_books_agree_three_ways(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 50_000 * SAT)
    async with env.sessions() as s, s.begin():
        inv = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                   amount_msat=7_000 * SAT)
    env.network.pay("customer1", inv.bolt11)
    listener = InvoiceListener(env.sessions, env.runtime.lightning, node="lnd")
    await listener.sweep()
    wd = await pay_out(env, customer_invoice(env, 3_000 * SAT))
    await env.runtime.payer.dispatch()
    await env.runtime.payer.drain()
    async with env.sessions() as s:
        assert (await s.get(Withdrawal, wd.id)).status == "confirmed"
    report = await run(env)
    assert report.ok, report.as_dict()
    assert report.as_dict()["by_way"] == {"ledger": 0, "records": 0, "world": 0}


async def test_a_payment_the_node_has_and_the_ledger_lacks_is_raised_then_resolved(
        lnenv: LnEnv):
    env = lnenv
    async with env.sessions() as s, s.begin():
        inv = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                   amount_msat=12_000 * SAT)
    env.network.pay("customer1", inv.bolt11)  # settled at the node; no listener ran
    first = await run(env)
    assert named(first) == [("world", "ln_invoice_unrecorded", inv.id)]
    assert "settled 12000000 msat" in first.differences[0].detail
    assert first.raised == []  # once could be the listener's lag
    second = await run(env)
    assert [d.kind for d in second.raised] == ["ln_invoice_unrecorded"]
    third = await run(env)
    assert third.raised == []  # raised once for a person, not on every run
    async with env.sessions() as s:
        items = (await s.execute(select(ReviewItem.subject).where(
            ReviewItem.kind == "reconciliation_difference"))).scalars().all()
        inc = (await s.execute(select(ReconciliationIncident))).scalar_one()
    assert items == [f"ln_invoice_unrecorded:{inv.id}"]
    assert (inc.seen_runs, inc.resolved_at) == (3, None)
    assert (await env.balances())["available"] == 0  # nothing was "fixed"
    # The listener catches up: the next run sees the books agree and closes the incident.
    await InvoiceListener(env.sessions, env.runtime.lightning, node="lnd").sweep()
    fourth = await run(env)
    assert fourth.ok and fourth.resolved == 1
    async with env.sessions() as s:
        inc = (await s.execute(select(ReconciliationIncident))).scalar_one()
    assert inc.resolved_at is not None


async def test_credits_without_a_cause_and_records_that_disagree_are_named(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 50_000 * SAT)
    async with env.sessions() as s, s.begin():
        ln_asset = (await ensure_platform_accounts(s, "BTC")).lightning.id
    # A Lightning credit for an invoice satvault never issued (a bug, or a hand-written row).
    await submit_one(env.sessions, TransferSpec(
        "ln:in:" + "ab" * 32, ln_asset, env.wallet.ledger_account_id, 5_000 * SAT, "BTC",
        code="ln_deposit", ref="lni_nobody"))
    # A withdrawal marked confirmed whose money is still only held.
    wd = await pay_out(env, customer_invoice(env, 2_000 * SAT))
    async with env.sessions() as s, s.begin():
        await s.execute(update(Withdrawal).where(Withdrawal.id == wd.id)
                        .values(status="confirmed"))
    report = await run(env)
    assert named(report) == sorted([
        ("records", "credit_without_cause", "ln:in:" + "ab" * 32),
        ("records", "ln_payment_without_hold",
         (await _attempt(env, wd.id))),
        ("records", "withdrawal_hold_mismatch", wd.id)])
    detail = {d.kind: d.detail for d in report.differences}
    assert "is confirmed but its hold is pending" in detail["withdrawal_hold_mismatch"]
    assert "5000000 msat credited for a Lightning invoice" in detail["credit_without_cause"]


async def _attempt(env: LnEnv, wd_id: str) -> str:
    async with env.sessions() as s:
        return (await s.execute(select(LnPayment.id).where(
            LnPayment.withdrawal_id == wd_id))).scalar_one()


async def test_a_payment_failed_here_but_made_by_the_node_is_named(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 50_000 * SAT)
    wd = await pay_out(env, customer_invoice(env, 4_000 * SAT))
    await env.runtime.payer.dispatch()
    await env.runtime.payer.drain()
    attempt = await _attempt(env, wd.id)
    # Someone rewrote the records as failed (hold released): the node did pay it.
    async with env.sessions() as s, s.begin():
        await s.execute(update(LnPayment).where(LnPayment.id == attempt)
                        .values(status="failed"))
    report = await run(env)
    kinds = {d.kind: d for d in report.differences}
    assert "ln_payment_failed_but_paid" in kinds
    assert kinds["ln_payment_failed_but_paid"].subject == attempt
    assert "the node paid 4000000 msat" in kinds["ln_payment_failed_but_paid"].detail


async def test_a_failed_attempt_whose_retry_paid_is_no_difference(lnenv: LnEnv):
    """Found from outside: the first attempt of a payment failed for a reason worth retrying
    (no route), the retry with the same hash succeeded, the books were right; yet every run
    named the first attempt `ln_payment_failed_but_paid` (the node's record of the hash is
    the retry's), an incident claiming a refund of money that left. The node is compared
    with what satvault holds for the hash: a later attempt paid it."""
    from satvault.lightning.models import LnPaymentStatus

    env = lnenv
    await fund(env, env.wallet, 500_000 * SAT)
    env.network.script_next("platform", "fail:no_route")
    wd = await pay_out(env, customer_invoice(env, 40_000 * SAT))
    assert (await env.runtime.payer.step()).retried == 1
    assert (await env.runtime.payer.step()).succeeded == 1
    async with env.sessions() as s:
        attempts = sorted((await s.execute(select(LnPayment.status).where(
            LnPayment.withdrawal_id == wd.id))).scalars())
    assert attempts == [LnPaymentStatus.FAILED, LnPaymentStatus.SUCCEEDED]
    report = await run(env)
    assert report.ok, report.as_dict()


async def test_an_on_chain_credit_that_disagrees_with_its_payment_and_a_broken_ledger(
        lnenv: LnEnv, db_url, tmp_path):
    env = lnenv
    async with env.sessions() as s, s.begin():
        user = await acc.create_user(s, email="bob@example.com")
        await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
    from tests.custody.test_sweeps import deposit

    await deposit(env, 80_000)
    assert (await run(env)).ok
    async with env.sessions() as s, s.begin():  # the watcher's record edited behind its back
        await s.execute(text("UPDATE onchain_payments SET credit_state = 'none'"))
        await s.execute(text("UPDATE ledger_accounts SET credits_posted = credits_posted + 1 "
                             f"WHERE id = {env.wallet.ledger_account_id}"))
    # On demand from the command line: every difference named, exit 1.
    home = tmp_path / "home"
    nodes = {"SATVAULT_CHAIN_BACKEND": "bitcoind", "SATVAULT_BITCOIND_URL": env.server.url,
             "SATVAULT_LIGHTNING_BACKEND": "lnd", "SATVAULT_LND_URL": env.lnd.url,
             "SATVAULT_NETWORK": "regtest"}
    proc = sv_here("reconcile", url=db_url, home=home, check=False, env=nodes)
    assert proc.returncode == 1, proc.stdout
    out = last_json(proc)
    kinds = sorted({d["kind"] for d in out["differences"]})
    assert "deposit_credit_mismatch" in kinds and any(k.startswith("ledger_") for k in kinds)
    assert out["by_way"]["records"] >= 1 and out["by_way"]["ledger"] >= 1
    mismatch = next(d for d in out["differences"] if d["kind"] == "deposit_credit_mismatch")
    assert "80000000 msat" in mismatch["detail"] or "credited 80000000" in mismatch["detail"]
    assert {i["kind"] for i in out["open_incidents"]} >= {"deposit_credit_mismatch"}
    # And through the admin API (the running runtime's nodes), which needs the admin scope.
    async with env.sessions() as s, s.begin():
        admin = await acc.create_user(s, email="ops@example.com", is_admin=True)
        _, token = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
        _, weak = await acc.create_api_key(s, owner_id=admin.id, scopes=["wallet:read"])
    async with api_client(env) as c:
        refused = await c.get("/api/v1/admin/reconciliation",
                              headers={"Authorization": f"Bearer {weak}"})
        assert refused.status_code == 403
        r = await c.get("/api/v1/admin/reconciliation?deep=false",
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is False and body["deep"] is False
    assert json.dumps(body).count("deposit_credit_mismatch") >= 1
    raised = {d["kind"] for d in body["raised"]}  # second sighting (CLI, then API): raised
    assert "deposit_credit_mismatch" in raised



async def test_a_lightning_payment_waiting_for_approvers_is_no_difference(lnenv: LnEnv):
    """Found from outside: a Lightning withdrawal the withdrawal policy holds for approvers
    (its payment queued, its hold in place, the payer skipping it until approval) was named
    ``ln_payment_without_hold`` at every run, an incident for a person about nothing. Its
    books agree; once rejected, they agree again (the payment retired, the hold voided)."""
    from satvault.withdrawals.policy import approvals
    from tests.policy.test_api import approvers_live

    env = lnenv
    who, k = await approvers_live(env, {
        "name": "all lightning", "action": "require_approval", "approvals": 1,
        "group": "treasury", "rails": ["lightning"], "min_amount_msat": 1},
        funds_msat=50_000 * SAT)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         json={"destination": customer_invoice(env, 2_000 * SAT)},
                         headers={**k["alice"], "Idempotency-Key": "held"})
    assert r.status_code == 201 and r.json()["status"] == "awaiting_approval", r.text
    wd = r.json()
    report = await run(env)
    assert report.ok, report.as_dict()
    async with env.sessions() as s, s.begin():
        await approvals.reject_withdrawal(s, withdrawal_id=wd["id"], approver=who.bob,
                                          reason="no")
    report = await run(env)
    assert report.ok, report.as_dict()


async def test_a_payment_the_node_made_that_no_record_holds_is_named_until_resolved(
        lnenv: LnEnv):
    """Found from outside (stop 42): an older backup restored over a newer database forgot a
    paid Lightning withdrawal; the customer withdrew the same money again, the node paid it
    from its spare liquidity, and the reconciliation and the doctor said all was well. Every
    payment the node made is now read from its own list and looked up in ours; one we do
    not record is named (shallow runs too: they resume the node's list before it) until a
    person resolves its review item, saying how it was booked."""
    from satvault.reconcile import Reconciler
    from satvault.reconcile.review import resolve_item

    env = lnenv
    await fund(env, env.wallet, 50_000 * SAT)
    wd = await pay_out(env, customer_invoice(env, 3_000 * SAT))  # ours: recorded
    await env.runtime.payer.dispatch()
    await env.runtime.payer.drain()
    async with env.sessions() as s:
        assert (await s.get(Withdrawal, wd.id)).status == "confirmed"
    reconciler = Reconciler(env.sessions, env.runtime.backend, env.runtime.lightning,
                            deep_every=100)
    assert await reconciler.step(force=True) == []
    # The node pays from outside the books (what the restored database forgot looks so).
    stray = env.network.create_invoice("customer2", 40_000 * SAT, memo="by hand")
    made = await env.runtime.lightning.pay(stray.bolt11, amount_msat=None,
                                           fee_limit_msat=5_000 * SAT, timeout_seconds=30)
    assert made.status is PaymentStatus.SUCCEEDED
    assert await reconciler.step(force=True) == []  # shallow, resumed: seen once
    report = await run(env, deep=False)  # a shallow run with no cursor reads it all: twice
    [diff] = [d for d in report.differences if d.kind == "ln_payment_unrecorded"]
    assert diff.subject == stray.payment_hash
    assert f"paid {40_000 * SAT} msat" in diff.detail and "no payment of satvault" in diff.detail
    assert [d.subject for d in report.raised] == [stray.payment_hash]  # raised to a person
    assert [d.kind for d in await reconciler.step(force=True)] == []  # still seen, once raised
    async with env.sessions() as s:
        incident = (await s.execute(select(ReconciliationIncident).where(
            ReconciliationIncident.kind == "ln_payment_unrecorded"))).scalar_one()
        assert incident.seen_runs == 3 and incident.resolved_at is None
    async with env.sessions() as s, s.begin():
        item = (await s.execute(select(ReviewItem).where(
            ReviewItem.subject == f"ln_payment_unrecorded:{stray.payment_hash}"))).scalar_one()
        await resolve_item(s, item_id=item.id, actor="user:ops",
                           note="paid by hand to customer2; booked against equity")
    assert await reconciler.step(force=True) == []
    async with env.sessions() as s:
        incident = (await s.execute(select(ReconciliationIncident).where(
            ReconciliationIncident.kind == "ln_payment_unrecorded"))).scalar_one()
        assert incident.resolved_at is not None
    # The next one after it is named as well: the cursor moved past the resolved one only.
    again = env.network.create_invoice("customer2", 1_000 * SAT)
    await env.runtime.lightning.pay(again.bolt11, amount_msat=None, fee_limit_msat=5_000 * SAT,
                                    timeout_seconds=30)
    await reconciler.step(force=True)
    report = await run(env, deep=False)
    assert [d.subject for d in report.differences if d.kind == "ln_payment_unrecorded"] \
        == [again.payment_hash]


async def test_a_stray_payment_resolved_while_in_flight_is_named_again_once_it_succeeds(
        lnenv: LnEnv):
    """Found from outside (stop 42, against the check above): a person resolved the
    review item of a stray payment still in flight; it then succeeded, 40,000 sat left, and
    no run named it again. What is resolved is the payment as it stood."""
    from satvault.backends.errors import BackendUnavailable
    from satvault.reconcile.review import resolve_item

    env = lnenv
    stray = env.network.create_invoice("customer2", 40_000 * SAT, memo="by hand")
    env.network.script(stray.payment_hash, "in_flight")
    with contextlib.suppress(BackendUnavailable):  # no answer while in flight
        await env.runtime.lightning.pay(stray.bolt11, amount_msat=None,
                                        fee_limit_msat=5_000 * SAT, timeout_seconds=2)
    await run(env, deep=False)
    report = await run(env, deep=False)
    [raised] = report.raised
    assert raised.subject == f"{stray.payment_hash}:in-flight" and "is paying" in raised.detail
    async with env.sessions() as s, s.begin():
        item = (await s.execute(select(ReviewItem).where(
            ReviewItem.subject == f"ln_payment_unrecorded:{raised.subject}"))).scalar_one()
        await resolve_item(s, item_id=item.id, actor="user:ops",
                           note="in flight, expected to fail: nothing to book")
    assert not [d for d in (await run(env, deep=True)).differences
                if d.kind == "ln_payment_unrecorded"]
    env.network.resolve(stray.payment_hash, "succeed")  # the money leaves after all
    report = await run(env, deep=True)
    [named] = [d for d in report.differences if d.kind == "ln_payment_unrecorded"]
    assert named.subject == stray.payment_hash and f"paid {40_000 * SAT} msat" in named.detail
