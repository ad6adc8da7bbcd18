"""Found from outside (stop 41): an admin's key counted as the holder of every wallet, so one
admin moved a customer's money with nobody else involved: paid an invoice of the admin's own
wallet from the customer's (an internal payment, which no withdrawal policy can hold for
approvers), and allow-listed their own node on the customer's wallet to pass a policy of two
approvers for unknown destinations. An admin sees every wallet; only a wallet's holder (its
owner's keys and tokens, a merchant's keys for its wallet) moves its money out: withdrawals on
every rail, internal payments, vouchers and allow-list entries (refunds: tests/invoices)."""

from __future__ import annotations

from sqlalchemy import func, select, update

from satvault.accounts import service as acc
from satvault.accounts.models import User
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from satvault.payouts.models import Withdrawal
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import paid_lightning_invoice, refunder_key, shop  # noqa: F401
from tests.invoices.test_refund_amounts import fund_merchant
from tests.lightning.test_lightning import customer_invoice, fund
from tests.lightning.test_refusal_budget import _bill

SAT = 1000
ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


async def _admin(env: LnEnv, email: str) -> tuple[dict[str, str], object]:
    """An admin with a wallet of their own and an admin API key (as ``init`` makes)."""
    wallet = await env.wallet_for(email)
    async with env.sessions() as s, s.begin():
        await s.execute(update(User).where(User.id == wallet.owner_id).values(is_admin=True))
        _, key = await acc.create_api_key(s, owner_id=wallet.owner_id, scopes=["admin"])
    return {"Authorization": f"Bearer {key}"}, wallet


async def test_an_admin_key_moves_no_customers_money(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 100_000 * SAT)
    mallory, own = await _admin(env, "mallory@example.com")
    await fund(env, own, 10_000 * SAT)
    before = await env.balances()
    bill = await _bill(env, own, 50_000 * SAT)
    customer = f"/api/v1/wallets/{env.wallet.id}"
    async with api_client(env) as c:
        for i, destination in enumerate([bill.bolt11, customer_invoice(env, 20_000 * SAT),
                                         ADDRESS]):
            r = await c.post(f"{customer}/withdrawals",
                             headers={**mallory, "Idempotency-Key": f"take-{i}"},
                             json={"destination": destination, "amount_msat": 20_000 * SAT})
            assert r.status_code == 403, r.text
            assert r.json()["type"].endswith("/not-wallet-holder"), r.text
        r = await c.post(f"{customer}/lnurl-withdraw", headers=mallory,
                         json={"amount_msat": 20_000 * SAT, "description": "gift"})
        assert r.status_code == 403 and r.json()["type"].endswith("/not-wallet-holder"), r.text
        r = await c.post(f"{customer}/allowlist", headers=mallory,
                         json={"destination": "02" + "ab" * 32, "label": "mine"})
        assert r.status_code == 403 and r.json()["type"].endswith("/not-wallet-holder"), r.text
        # The admin still sees the wallet, its allow-list, and spends from their own.
        assert (await c.get(customer, headers=mallory)).status_code == 200
        r = await c.get(f"{customer}/allowlist", headers=mallory)
        assert r.status_code == 200 and r.json() == [], r.text
        r = await c.post(f"/api/v1/wallets/{own.id}/withdrawals",
                         headers={**mallory, "Idempotency-Key": "own"},
                         json={"destination": customer_invoice(env, 1_000 * SAT)})
        assert r.status_code == 201, r.text
    assert await env.balances() == before
    async with env.sessions() as s:
        assert (await s.get(LnInvoice, bill.id)).status == LnInvoiceStatus.OPEN
        # Who asked is kept on every withdrawal, not only on one held for review.
        assert (await s.get(Withdrawal, r.json()["id"])).initiator == own.owner_id
        taken = (await s.execute(select(func.count()).select_from(Withdrawal).where(
            Withdrawal.wallet_id == env.wallet.id))).scalar_one()
    assert taken == 0
    await env.check()


async def test_an_admin_key_refunds_no_merchants_invoice(lnenv: LnEnv, shop):  # noqa: F811
    """A refund is a withdrawal from the merchant's wallet to a destination the refunder
    names: the merchant's and its stores' keys refund, an admin's key does not."""
    env = lnenv
    await fund_merchant(env, shop)
    mallory, own = await _admin(env, "mallory@example.com")
    mine = await _bill(env, own, 5_000 * SAT)
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "paid", sats=10_000)
        before = await env.balances(shop["wallet"])
        for i, destination in enumerate([mine.bolt11, ADDRESS]):
            r = await c.post(f"/api/v1/invoices/{inv['id']}/refunds",
                             headers={**mallory, "Idempotency-Key": f"r{i}"},
                             json={"destination": destination, "amount_msat": 5_000 * SAT})
            assert r.status_code == 403, r.text
            assert r.json()["type"].endswith("/not-wallet-holder"), r.text
        assert await env.balances(shop["wallet"]) == before
        r = await c.post(f"/api/v1/invoices/{inv['id']}/refunds",
                         headers={**await refunder_key(env, shop), "Idempotency-Key": "own"},
                         json={"destination": ADDRESS, "amount_msat": 5_000 * SAT})
        assert r.status_code == 201, r.text
    async with env.sessions() as s:
        assert (await s.get(LnInvoice, mine.id)).status == LnInvoiceStatus.OPEN
    await env.check()
