"""Withdrawals to the platform's own addresses. A customer's deposit address is a payment to
that customer, credited when it confirms; an address of the platform's own wallets (the
semi-cold wallet's change or funding addresses, a sweep's or refill's destination) is no
destination: paid there, the customer's money would stay with the platform, unbooked."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.custody.status import custody_status
from satvault.onchain.deposits import create_deposit
from satvault.onchain.models import OnchainAddress
from satvault.onchain.service import allocate_address
from satvault.payouts.errors import InvalidWithdrawal
from satvault.payouts.models import Withdrawal
from tests.chainenv import Env, api_client
from tests.payouts.test_payouts import PAYOUTS, external_address, fund, withdraw

SAT = 1000


async def pay_out(env: Env) -> None:
    await env.runtime.payouts.step()
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()


async def test_a_withdrawal_to_an_address_of_the_platforms_own_wallets_is_refused(env: Env):
    await fund(env, 1_000_000)
    await withdraw(env, external_address(env, 0), 100_000)
    await pay_out(env)
    async with env.sessions() as s, s.begin():
        batch = (await s.execute(PAYOUTS)).scalar_one()
        change = await s.get(OnchainAddress, batch.change_address_id)
        assert change is not None
        funding = await allocate_address(s, role="hot", owner_type="platform", owner_id="hot",
                                         purpose="funding", request_id=None)
        _, key = await acc.create_api_key(s, owner_id=env.wallet.owner_id,
                                          scopes=["wallet:read", "withdrawals:write"])
    before = await env.balances()
    for address in (change.address, funding.address, change.address.upper(),
                    f"bitcoin:{change.address}?amount=0.0005"):
        with pytest.raises(InvalidWithdrawal, match="platform's own"):
            await withdraw(env, address, 50_000)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         json={"destination": change.address, "amount_msat": 50_000 * SAT},
                         headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "own"})
    assert r.status_code == 422 and r.json()["type"].endswith("/invalid-withdrawal"), r.text
    assert await env.balances() == before  # nothing held
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Withdrawal))
                ).scalar_one() == 1
    await pay_out(env)
    status = await custody_status(env.sessions, env.runtime.backend)
    assert status.differences == [], status.as_dict()
    await env.check()


async def test_a_withdrawal_to_another_customers_deposit_address_credits_them(env: Env):
    await fund(env, 1_000_000)
    async with env.sessions() as s, s.begin():
        bob = await acc.create_user(s, email="bob@example.com")
        bobs = await acc.ensure_wallet(s, owner_type="user", owner_id=bob.id)
        deposit = await create_deposit(s, wallet=bobs, settings=env.settings)
    await withdraw(env, deposit.address, 70_000)
    await pay_out(env)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.balances(bobs))["available"] == 70_000 * SAT
    status = await custody_status(env.sessions, env.runtime.backend)
    assert status.differences == [], status.as_dict()
    await env.check()


async def test_a_withdrawal_to_the_wallets_own_deposit_address_is_refused(env: Env):
    """Found from outside: a merchant's refund or withdrawal to one of its own invoices'
    deposit addresses was paid on-chain and credited back: the invoice counted the
    merchant's own money as a customer's payment (settled, its refund cap raised by the
    refund itself), the platform fee and a network fee charged on money that only went round.
    Over Lightning the same is refused ("issued to your own wallet"); on-chain now too, the
    wallet's own addresses in any spelling. Another wallet's, even of the same person, is
    a payment to it and goes on."""
    await fund(env, 1_000_000)
    async with env.sessions() as s, s.begin():
        mine = await create_deposit(s, wallet=env.wallet, settings=env.settings)
        shop = await acc.create_merchant(s, name="Own shop", owner_user_id=env.wallet.owner_id)
        shops = await acc.ensure_wallet(s, owner_type="merchant", owner_id=shop.id)
        theirs = await create_deposit(s, wallet=shops, settings=env.settings)
        _, key = await acc.create_api_key(s, owner_id=env.wallet.owner_id,
                                          scopes=["wallet:read", "withdrawals:write"])
    before = await env.balances()
    for address in (mine.address, mine.address.upper(), f"bitcoin:{mine.address}?amount=0.0005"):
        with pytest.raises(InvalidWithdrawal, match="this wallet's own deposit"):
            await withdraw(env, address, 50_000)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         json={"destination": mine.address, "amount_msat": 50_000 * SAT},
                         headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "own"})
    assert r.status_code == 422 and r.json()["type"].endswith("/invalid-withdrawal"), r.text
    assert "own deposit" in r.json()["detail"]
    assert await env.balances() == before  # nothing held
    await withdraw(env, theirs.address, 70_000)  # the shop's: a payment to the shop
    await pay_out(env)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.balances(shops))["available"] == 70_000 * SAT
    await env.check()
