"""One external BOLT11 paid from many concurrent requests (issue 9, money 5): exactly one
payment; every other request gets a 409 or 422 problem, never a 500."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.ledger.models import LedgerTransfer
from satvault.lightning.models import LnPayment
from satvault.simnet.ln.errors import UnknownPayment
from tests.chainenv import LnEnv, api_client
from tests.lightning.test_lightning import fund, own_bill, pay_out, status
from tests.waiting import eventually

SAT = 1000


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_create": "1000/second"}])
async def test_one_bolt11_from_fifty_concurrent_requests_is_paid_once(lnenv: LnEnv):
    env = lnenv
    await fund(env, env.wallet, 1_000_000 * SAT)
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
    auth = {"Authorization": f"Bearer {token}"}
    bolt11 = env.network.create_invoice("customer2", 10_000 * SAT).bolt11
    async with api_client(env) as c:
        answers = await asyncio.gather(*(
            c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                   headers={**auth, "Idempotency-Key": f"same-{i}"},
                   json={"destination": bolt11}) for i in range(50)))
    codes = [a.status_code for a in answers]
    assert codes.count(201) == 1, [a.text for a in answers if a.status_code >= 500]
    assert all(code in (201, 409, 422) for code in codes), codes
    assert all(a.headers["content-type"] == "application/problem+json"
               for a in answers if a.status_code != 201)
    await env.runtime.payer.step()
    async with env.sessions() as s:
        payments = (await s.execute(select(func.count()).select_from(LnPayment))).scalar_one()
    assert payments == 1
    b = await env.balances()
    assert b["held"] == 0
    assert 1_000_000 * SAT - b["available"] < 10_000 * SAT + 10_000 * SAT
    await env.check()


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"ln_pay_timeout_seconds": 30, "ln_payer_per_destination": 2}


async def test_payments_held_by_one_receiver_do_not_delay_anybody_else(lnenv: LnEnv):
    """Issue 9, money 4: three payments to a receiver that holds its HTLCs (30 s timeout
    each) while another user pays someone else: that payment completes at once; the held
    receiver gets at most its per-destination share of the payer; nothing is refunded."""
    from satvault.workers import lightning_payer_worker

    env = lnenv
    payer = env.runtime.payer
    await fund(env, env.wallet, 1_000_000 * SAT)
    bob = await env.wallet_for("bob@example.com")
    await fund(env, bob, 100_000 * SAT)
    held = [env.network.create_invoice("customer2", 20_000 * SAT, memo=f"h{i}").bolt11
            for i in range(3)]
    hashes = [env.network.decode(b).payment_hash for b in held]
    for h in hashes:
        env.network.script(h, "in_flight")
    worker = lightning_payer_worker(payer, 0.05)
    worker.start()
    try:
        slow = [await pay_out(env, b) for b in held]

        await eventually(lambda: payer.busy >= 2)
        assert payer.busy == 2  # the third waits for the receiver's share to free up
        quick = await pay_out(env, env.network.create_invoice("customer1", 5_000 * SAT).bolt11,
                              wallet=bob)

        async def confirmed(wd_id: str) -> bool:
            return (await status(env, wd_id))[0] == "confirmed"

        # 10 s, against holds of 30 s each: a payer sending one at a time fails here.
        await eventually(lambda: confirmed(quick.id), timeout=10,
                         message="a payment to another node waited behind the held ones")
        assert [(await status(env, w.id))[0] for w in slow].count("broadcast") == 2

        def resolve(payment_hash: str) -> bool:
            try:  # the third is in flight only once one of the first two is done
                env.network.resolve(payment_hash, "succeed")
                return True
            except UnknownPayment:
                return False

        for h in hashes:
            await eventually(lambda h=h: resolve(h))
        for w in slow:
            await eventually(lambda w=w: confirmed(w.id))
    finally:
        await worker.stop()
    b = await env.balances()
    assert b["held"] == 0
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_create": "1000/second"}])
async def test_internal_payment_twins_with_one_key_pay_once(lnenv: LnEnv):
    """An internal payment runs in one transaction with its key's response (issue 10): twins
    of one key race through it and the unique key decides. One withdrawal and one ledger
    transfer; every twin answers the same bytes; another body under the key is refused; a
    second key paying the same invoice gets the refusal it always got."""
    from satvault.payouts.models import Withdrawal

    env = lnenv
    bill, auth = await own_bill(env, 7_000 * SAT)
    url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
    async with api_client(env) as c:
        answers = await asyncio.gather(*(
            c.post(url, headers={**auth, "Idempotency-Key": "twin"},
                   json={"destination": bill.bolt11}) for _ in range(8)))
        assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
        assert answers[0].json()["method"] == "internal"
        assert len({a.content for a in answers}) == 1  # one withdrawal, the same bytes
        assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 7
        later = await c.post(url, headers={**auth, "Idempotency-Key": "twin"},
                             json={"destination": bill.bolt11})
        assert later.status_code == 201 and later.content == answers[0].content
        assert later.headers["Idempotent-Replayed"] == "true"
        other_body = await c.post(url, headers={**auth, "Idempotency-Key": "twin"},
                                  json={"destination": bill.bolt11, "amount_msat": 7_000 * SAT})
        assert other_body.status_code == 422, other_body.text
        other_key = await c.post(url, headers={**auth, "Idempotency-Key": "another"},
                                 json={"destination": bill.bolt11})
        assert other_key.status_code == 422, other_key.text
        assert other_key.json()["detail"] == "this invoice is paid"
    async with env.sessions() as s:
        withdrawals = (await s.execute(select(func.count()).select_from(Withdrawal))
                       ).scalar_one()
        moves = (await s.execute(select(func.count()).select_from(LedgerTransfer).where(
            LedgerTransfer.id == f"ln:in:{bill.payment_hash}"))).scalar_one()
    assert withdrawals == 1 and moves == 1
    assert (await env.balances())["available"] == (100_000 - 7_000) * SAT
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_create": "1000/second"}])
async def test_one_own_invoice_from_concurrent_keys_is_paid_once(lnenv: LnEnv):
    """Different keys racing to pay one of our invoices: one payment, the others refused
    with a problem (never a 500), nothing moved twice."""

    env = lnenv
    bill, auth = await own_bill(env, 5_000 * SAT)
    async with api_client(env) as c:
        answers = await asyncio.gather(*(
            c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                   headers={**auth, "Idempotency-Key": f"k-{i}"},
                   json={"destination": bill.bolt11}) for i in range(8)))
    codes = [a.status_code for a in answers]
    assert codes.count(201) == 1, [a.text for a in answers]
    assert all(code in (409, 422) for code in codes if code != 201), codes
    assert (await env.balances())["available"] == (100_000 - 5_000) * SAT
    await env.check()
