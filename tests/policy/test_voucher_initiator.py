"""Who made an LNURL-withdraw voucher is the initiator of what its redemption pays out, and
never approves it: the withdrawal policy's second pair of eyes holds for vouchers too."""

from __future__ import annotations

from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from tests.lightning_lnurl.conftest import LnEnv, ln  # noqa: F401
from tests.lightning_lnurl.fakes import make_bolt11
from tests.lightning_lnurl.test_withdraw import FUND, redeem, voucher
from tests.policy.support import People, add_approvers, make_live

ONE_OF_TREASURY = [{"name": "every payout", "action": "require_approval", "approvals": 1,
                    "group": "treasury", "rails": ["lightning"]}]


async def _policy(env: LnEnv) -> People:
    """Two admins; mallory (an admin too), carol and the customer alice approvers of
    ``treasury``; one of them approves every Lightning payout."""
    async with env.sessions() as s, s.begin():
        a1 = await acc.create_user(s, email="admin1@example.com", is_admin=True)
        a2 = await acc.create_user(s, email="admin2@example.com", is_admin=True)
        mallory = await acc.create_user(s, email="mallory@example.com", is_admin=True)
        carol = await acc.create_user(s, email="carol@example.com")
        await add_approvers(s, group="treasury", admins=(a1.id, a2.id), user_ids=[
            mallory.id, carol.id, env.wallets["alice"].owner_id])
        _, env.keys["mallory"] = await acc.create_api_key(s, owner_id=mallory.id,
                                                         scopes=["admin"])
        _, env.keys["carol"] = await acc.create_api_key(s, owner_id=carol.id,
                                                       scopes=["withdrawals:write"])
    who = People(a1.id, a2.id, mallory.id, carol.id, "")
    await make_live(env.sessions, who, ONE_OF_TREASURY)
    return who


async def _queue(env: LnEnv) -> list[tuple[str, str]]:
    """(withdrawal, initiator) of each withdrawal awaiting approval, as approvers see them."""
    r = await env.client.get("/api/v1/admin/withdrawals/awaiting-approval",
                            headers=env.auth("carol"))
    assert r.status_code == 200, r.text
    return [(w["withdrawal_id"], w["initiator"]) for w in r.json()]


async def _held(env: LnEnv) -> Withdrawal:
    async with env.sessions() as s:
        return (await s.execute(select(Withdrawal))).scalar_one()


async def test_an_admins_voucher_is_never_approved_by_that_admin(ln: LnEnv):  # noqa: F811
    """Found from outside: an admin (also an approver: mallory) made a voucher on a customer's
    wallet, redeemed it to their own node, and approved the payout the policy held, since
    the redemption named the customer as its initiator. Since stop 41 an admin makes no
    voucher on a wallet they do not hold (tests/accounts/test_admins_do_not_spend.py); on
    their own, the redemption names them, and they never approve it."""
    await ln.fund("alice", FUND)
    who = await _policy(ln)
    mallory = who.bob
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['alice'].id}/lnurl-withdraw",
                             json={"amount_msat": 100_000, "description": "gift"},
                             headers=ln.auth("mallory"))
    assert r.status_code == 403 and r.json()["type"].endswith("/not-wallet-holder"), r.text
    async with ln.sessions() as s, s.begin():
        ln.wallets["mallory"] = await acc.ensure_wallet(s, owner_type="user",
                                                        owner_id=mallory)
    await ln.fund("mallory", FUND)

    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['mallory'].id}/lnurl-withdraw",
                             json={"amount_msat": 100_000, "description": "gift"},
                             headers=ln.auth("mallory"))
    assert r.status_code == 201, r.text
    v = r.json()
    assert await redeem(ln, v, make_bolt11(100_000)) == {"status": "OK"}
    wd = await _held(ln)
    assert wd.status == WithdrawalStatus.AWAITING_APPROVAL
    assert await _queue(ln) == [(wd.id, mallory)]
    r = await ln.client.post(f"/api/v1/admin/withdrawals/{wd.id}/approve",
                             headers=ln.auth("mallory"))
    assert r.status_code == 403 and "initiator" in r.text, r.text
    assert (await _held(ln)).status == WithdrawalStatus.AWAITING_APPROVAL
    r = await ln.client.post(f"/api/v1/admin/withdrawals/{wd.id}/approve",
                             headers=ln.auth("carol"))
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    assert (await _held(ln)).status == WithdrawalStatus.PENDING
    await ln.check()


async def test_a_customers_own_voucher_names_the_customer(ln: LnEnv):  # noqa: F811
    await ln.fund("alice", FUND)
    await _policy(ln)
    v = await voucher(ln, 100_000, who="alice")
    assert await redeem(ln, v, make_bolt11(100_000)) == {"status": "OK"}
    wd = await _held(ln)
    assert wd.status == WithdrawalStatus.AWAITING_APPROVAL
    assert await _queue(ln) == [(wd.id, ln.wallets["alice"].owner_id)]
    await ln.check()
