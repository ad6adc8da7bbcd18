"""An internal payment refused after the payee's invoice was taken off the node.

Paying one of our own invoices cancels it on the node before the unit of work opens; the risk
rules and the withdrawal policy decide under the payer's lock, after that. A payment they
refuse (or whose limit a concurrent payment used up meanwhile) rolled back and left the
payee's invoice dead on the node but ``open`` in its row: a merchant's checkout page, or a
user's wallet, showed a BOLT11 nobody could pay. Now the row says what the node says
(``canceled``) and a store invoice still awaiting payment gets a fresh BOLT11 for what is due.
A withdrawal policy rule on the payment alone refuses it before the invoice leaves the node. A
payment the rules hold for review keeps the invoice reserved for it
(``tests/lightning/test_reserved_invoices.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from satvault.payouts.models import Withdrawal
from satvault.risk.lists import refresh_sanctions
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import create, settle_all, shop  # noqa: F401
from tests.lightning.test_lightning import _payers_key, fund
from tests.policy.support import make_live, people

SAT = 1000
FUNDS = 100_000 * SAT


async def _bob(env: LnEnv) -> tuple[str, dict[str, str]]:
    """Another user, with a wallet and a key for it."""
    async with env.sessions() as s, s.begin():
        user = await acc.create_user(s, email="payee@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
        _, token = await acc.create_api_key(s, owner_id=user.id,
                                            scopes=["wallet:read", "wallet:write"])
    return wallet.id, {"Authorization": f"Bearer {token}"}


async def _wallet_invoice(c: httpx.AsyncClient, env: LnEnv, msat: int | None
                          ) -> dict[str, Any]:
    """Bob's Lightning invoice (a deposit of his wallet): what to pay and how bob reads it."""
    wallet_id, auth = await _bob(env)
    r = await c.post(f"/api/v1/wallets/{wallet_id}/deposits", headers=auth,
                     json={"method": "lightning", "amount_msat": msat,
                           "description": "for bob"})
    assert r.status_code == 201, r.text
    return {"payee": wallet_id, "bolt11": r.json()["bolt11"], "id": r.json()["id"],
            "read": auth}


async def _store_invoice(c: httpx.AsyncClient, shop: dict[str, Any], key: str,  # noqa: F811
                         sats: int) -> dict[str, Any]:
    r = await create(c, shop, key, amount=str(sats), currency="SATS",
                     payment_methods=["lightning"])
    assert r.status_code == 201, r.text
    inv = r.json()
    return {"payee": shop["wallet"].id, "bolt11": inv["payment_methods"]["lightning"]["bolt11"],
            "id": inv["id"]}


async def _refuse_payments_to(env: LnEnv, how: str, payee: str) -> str:
    """Make the rules (``risk``) or the withdrawal policy refuse internal payments to
    ``payee``'s wallet; the problem type the payer gets. ``policy``: a rule on the payment
    alone, decided before the invoice leaves the node; ``policy-window``: one on what the
    wallet paid in a window, decided after (under the payer's lock)."""
    if how == "risk":
        async with env.sessions() as s, s.begin():
            await refresh_sanctions(s, text=f"wallet:{payee}\n", actor="user:admin")
        return "risk-rejected"
    who = await people(env.sessions, initiator=env.wallet.owner_id)
    window = {"window_hours": 24, "window_min_sum_msat": 1} if how == "policy-window" else {}
    await make_live(env.sessions, who, [
        {"name": "nothing internal", "action": "block", "rails": ["internal"], **window}])
    return "withdrawal-blocked"


async def _pay(c: httpx.AsyncClient, env: LnEnv, auth: dict[str, str], key: str, bolt11: str,
               amount_msat: int | None = None) -> httpx.Response:
    return await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                        headers={**auth, "Idempotency-Key": key},
                        json={"destination": bolt11,
                              **({"amount_msat": amount_msat} if amount_msat else {})})


async def _row(env: LnEnv, bolt11: str) -> LnInvoice:
    async with env.sessions() as s:
        row = (await s.execute(select(LnInvoice).where(
            LnInvoice.bolt11 == bolt11))).scalar_one()
    return row


async def _nothing_moved(env: LnEnv) -> None:
    b = await env.balances()
    assert (b["available"], b["held"]) == (FUNDS, 0), b
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Withdrawal))).scalar_one() == 0


async def _checkout_bolt11(c: httpx.AsyncClient, invoice_id: str) -> str | None:
    r = await c.get(f"/i/{invoice_id}/status")
    assert r.status_code == 200, r.text
    bolt11: str | None = r.json()["destinations"]["bolt11"]
    return bolt11


@pytest.mark.parametrize("how", ["risk", "policy-window"])
@pytest.mark.parametrize("payee", ["store", "wallet", "wallet-amountless"])
async def test_a_refused_internal_payment_leaves_no_dead_bolt11_behind(
        lnenv: LnEnv, shop, how: str, payee: str):  # noqa: F811
    """The API's fast path (an invoice with its amount) and the general path (an amountless
    one, paid with an amount) alike: the payer gets the refusal it always got, nothing moves;
    the payee's row is ``canceled`` as the node has it, and a store invoice's checkout page
    shows a fresh BOLT11 that a customer then pays from outside."""
    env = lnenv
    await fund(env, env.wallet, FUNDS)
    auth = await _payers_key(env)
    amount = 20_000 * SAT
    async with api_client(env) as c:
        if payee == "store":
            bill = await _store_invoice(c, shop, "inv", 20_000)
        else:
            bill = await _wallet_invoice(c, env, None if payee.endswith("amountless")
                                         else amount)
        kind = await _refuse_payments_to(env, how, bill["payee"])
        r = await _pay(c, env, auth, "pay", bill["bolt11"],
                       amount if payee.endswith("amountless") else None)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith(f"/{kind}"), r.text
        again = await _pay(c, env, auth, "pay", bill["bolt11"],
                           amount if payee.endswith("amountless") else None)
        assert again.status_code == 403 and again.json() == r.json()  # the stored refusal
        await _nothing_moved(env)
        # The node has it cancelled: nobody can pay it from outside...
        dead = env.network.pay("customer1", bill["bolt11"],
                               amount_msat=amount if payee.endswith("amountless") else None)
        assert dead.status.value.upper() == "FAILED"
        # ... and the platform says so.
        assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.CANCELED
        if payee == "store":
            fresh = await _checkout_bolt11(c, bill["id"])
            assert fresh is not None and fresh != bill["bolt11"]
            assert (await _row(env, fresh)).amount_msat == amount
            paid = env.network.pay("customer1", fresh)
            assert paid.status.value.upper() == "SUCCEEDED", paid
            await settle_all(env)
            got = await c.get(f"/api/v1/invoices/{bill['id']}", headers=shop["read"])
            assert got.json()["status"] == "settled", got.text
        else:
            seen = await c.get(f"/api/v1/deposits/{bill['id']}", headers=bill["read"])
            assert seen.status_code == 200 and seen.json()["status"] == "canceled", seen.text
    await env.check()


@pytest.mark.parametrize("payee", ["store", "wallet", "wallet-amountless"])
async def test_a_policy_block_known_before_the_node_leaves_the_invoice_alone(
        lnenv: LnEnv, shop, payee: str):  # noqa: F811
    """A withdrawal policy rule that needs only the payment itself (its rail, amount, asset,
    wallet) is decided before the invoice is taken off the node: the payer gets the same
    ``withdrawal-blocked``, and the payee's invoice stays open, payable from outside."""
    env = lnenv
    await fund(env, env.wallet, FUNDS)
    auth = await _payers_key(env)
    amount = 20_000 * SAT
    amountless = payee.endswith("amountless")
    async with api_client(env) as c:
        if payee == "store":
            bill = await _store_invoice(c, shop, "inv", 20_000)
        else:
            bill = await _wallet_invoice(c, env, None if amountless else amount)
        kind = await _refuse_payments_to(env, "policy", bill["payee"])
        r = await _pay(c, env, auth, "pay", bill["bolt11"], amount if amountless else None)
        assert r.status_code == 403 and r.json()["type"].endswith(f"/{kind}"), r.text
        await _nothing_moved(env)
        assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.OPEN
        if payee == "store":
            assert await _checkout_bolt11(c, bill["id"]) == bill["bolt11"]
        paid = env.network.pay("customer1", bill["bolt11"],
                               amount_msat=amount if amountless else None)
        assert paid.status.value.upper() == "SUCCEEDED", paid
        await settle_all(env)
        assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.PAID
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_create": "1000/second"}])
async def test_a_payment_the_limit_refuses_under_the_lock_leaves_no_dead_bolt11_behind(
        lnenv: LnEnv, shop):  # noqa: F811
    """Two internal payments at once, each within the 24-hour limit on its own: both pass the
    checks made before the node (neither has committed), both take their invoice off it; under
    the payer's lock the second finds the limit used up and is refused. Its store invoice is
    payable again (a fresh BOLT11); the first is settled."""
    env = lnenv
    env.settings.withdrawal_daily_limit_msat = 100_000 * SAT
    # Money for both (a take promises its amount: a balance for one refuses the second
    # before the node since migration 0082), the limit for one.
    await fund(env, env.wallet, 2 * FUNDS)
    auth = await _payers_key(env)
    node = env.runtime.lightning
    assert node is not None
    cancel = node.cancel_invoice
    both_off = asyncio.Barrier(2)

    async def cancel_together(payment_hash: str) -> None:
        await cancel(payment_hash)
        await both_off.wait()  # neither unit of work opens before both invoices are off

    node.cancel_invoice = cancel_together  # type: ignore[method-assign]
    async with api_client(env) as c:
        bills = [await _store_invoice(c, shop, f"inv-{i}", 60_000) for i in range(2)]
        answers = await asyncio.wait_for(asyncio.gather(
            *(_pay(c, env, auth, f"pay-{i}", b["bolt11"]) for i, b in enumerate(bills))), 30)
        codes = sorted(a.status_code for a in answers)
        assert codes == [201, 422], [a.text for a in answers]
        paid, refused = (bills if answers[0].status_code == 201 else bills[::-1])
        problem = next(a for a in answers if a.status_code == 422).json()
        assert "24-hour" in problem["detail"], problem
        assert (await env.balances())["available"] == 2 * FUNDS - 60_000 * SAT
        assert (await _row(env, refused["bolt11"])).status == LnInvoiceStatus.CANCELED
        fresh = await _checkout_bolt11(c, refused["id"])
        assert fresh is not None and fresh != refused["bolt11"]
        assert env.network.pay("customer1", fresh).status.value.upper() == "SUCCEEDED"
        await settle_all(env)
        for b in (paid, refused):
            got = await c.get(f"/api/v1/invoices/{b['id']}", headers=shop["read"])
            assert got.json()["status"] == "settled", got.text
    await env.check()


@pytest.mark.parametrize("path", ["voucher", "refund"])
async def test_a_refused_voucher_or_refund_to_one_of_our_invoices_leaves_no_dead_bolt11(
        lnenv: LnEnv, shop, path: str):  # noqa: F811
    """The other paths that settle one of our invoices inside the ledger: a withdraw link
    redeemed with it, a store invoice's refund sent to it. Refused by the rules after the
    invoice left the node, the invoice is ``canceled`` as well."""
    from tests.invoices.test_invoices import paid_lightning_invoice, refunder_key
    from tests.lightning.test_lightning import _redeem_a_link

    env = lnenv
    await fund(env, env.wallet, FUNDS)
    async with api_client(env) as c:
        bill = await _wallet_invoice(c, env, 5_000 * SAT)
        if path == "refund":
            paid = await paid_lightning_invoice(c, env, shop, "paid", sats=30_000)
        await _refuse_payments_to(env, "risk", bill["payee"])
        if path == "voucher":
            answer = await _redeem_a_link(env, amount_msat=5_000 * SAT, pr=bill["bolt11"])
            # The public callback says no more than that (the rules' verdict is the owner's).
            assert answer["status"] == "ERROR" and "cannot be redeemed" in answer["reason"], \
                answer
        else:
            r = await c.post(f"/api/v1/invoices/{paid['id']}/refunds",
                             headers={**await refunder_key(env, shop), "Idempotency-Key": "r"},
                             json={"destination": bill["bolt11"]})
            assert r.status_code == 403 and r.json()["type"].endswith("/risk-rejected"), r.text
        assert env.network.pay("customer1", bill["bolt11"]).status.value.upper() == "FAILED"
        assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.CANCELED
    await env.check()


async def test_too_little_money_for_a_store_invoice_is_said_as_for_any_invoice(
        lnenv: LnEnv, shop):  # noqa: F811
    """Found from outside: paying a store invoice (its payment linked to the platform's fee)
    with too little money answered ``invalid-transfer``, the fee's "linked event failed",
    where a wallet's invoice answered ``insufficient-funds``. The root cause is answered."""
    env = lnenv
    await fund(env, env.wallet, 1_000 * SAT)
    auth = await _payers_key(env)
    assert env.settings.invoice_fee_bp > 0
    async with api_client(env) as c:
        bill = await _store_invoice(c, shop, "inv", 20_000)
        r = await _pay(c, env, auth, "pay", bill["bolt11"])
        assert r.status_code == 422 and r.json()["type"].endswith("/insufficient-funds"), r.text
        assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.OPEN
    await env.check()
