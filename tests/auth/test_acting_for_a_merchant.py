"""An admin's access token acting for a merchant (found from outside, stop 32): it kept the
``admin`` scope while naming the merchant as the caller, so the four-eyes and self-review
checks, which compare who acts, missed the admin behind it: their own rule set approved,
their own KYC record decided, and a withdrawal they started (from any wallet, as an admin may)
approved by themselves, its initiator recorded as the merchant's owner (nobody). Acting for a
merchant is now acting as that merchant only: no admin scope, and the token's user is the
initiator of what it starts. And an admin acting for a merchant it does not own moves none
of its money (found from outside, stop 41: such a token paid the admin from the merchant's
wallet, where the admin's own key is refused as not the wallet's holder)."""

from __future__ import annotations

import pyotp
from sqlalchemy import text

from satvault.accounts import service as acc
from satvault.auth import tokens, totp
from satvault.payouts.models import Withdrawal
from tests.chainenv import LnEnv, api_client
from tests.lightning.test_lightning import customer_invoice, fund
from tests.policy.support import People, add_approvers, make_live
from tests.risk.conftest import default_doc

SAT = 1000


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin_with_totp(sessions, email: str):
    async with sessions() as s, s.begin():
        admin = await acc.create_user(s, email=email, password="correct horse battery",
                                      is_admin=True)
        _, key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
    async with sessions() as s, s.begin():
        started = await totp.begin_enrollment(s, user_id=admin.id)
        await totp.confirm_enrollment(s, user_id=admin.id,
                                      code=pyotp.TOTP(started.secret).now())
    return admin, key


async def token_for(sessions, user, merchant_id: str) -> tuple[str, list[str]]:
    """What the password grant with TOTP gives a user acting for ``merchant_id``."""
    async with sessions() as s, s.begin():
        pair = await tokens.issue(s, user=await acc.get_user(s, user.id),
                                  merchant_id=merchant_id, second_factor=True,
                                  method="password+totp", stepped_up=True)
    return pair.access_token, list(pair.scopes)


async def test_a_merchant_token_reaches_no_admin_route(lnenv: LnEnv):
    env = lnenv
    ann, ann_key = await admin_with_totp(env.sessions, "ann@example.com")
    async with env.sessions() as s, s.begin():
        shop = await acc.create_merchant(s, name="Shop", owner_user_id=None)
    as_shop, scopes = await token_for(env.sessions, ann, shop.id)
    assert "admin" not in scopes and "withdrawals:write" not in scopes
    doc = default_doc()
    doc["thresholds"]["review"] = 10
    async with api_client(env) as c:
        base = "/api/v1/admin/risk/rule-sets"
        draft = await c.post(base, headers=bearer(ann_key), json={"rules": doc})
        assert draft.status_code == 201, draft.text
        version = draft.json()["version"]
        assert (await c.post(f"{base}/{version}/approve", headers=bearer(ann_key))
                ).status_code == 409  # the proposer
        r = await c.post(f"{base}/{version}/approve", headers=bearer(as_shop))
        assert r.status_code == 403, r.text
        url = f"/api/v1/admin/kyc/user/{ann.id}/records"
        body = {"tier": 2, "decision": "approve", "full_name": "Ann Example",
                "documents": ["doc://passport"], "checks": ["id-document"]}
        assert (await c.post(url, headers=bearer(ann_key), json=body)).status_code == 403
        assert (await c.post(url, headers=bearer(as_shop), json=body)).status_code == 403
        assert (await c.get(url, headers=bearer(ann_key))).json()["kyc_tier"] == 0
        # Nor another person's wallet: a merchant's token sees the merchant's (and an admin
        # acting for a merchant it does not own carries no money scope at all).
        r = await c.get(f"/api/v1/wallets/{env.wallet.id}", headers=bearer(as_shop))
        assert r.status_code == 404, r.text
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         json={"destination": customer_invoice(env, 100_000 * SAT)},
                         headers={**bearer(as_shop), "Idempotency-Key": "w"})
        assert r.status_code == 403, r.text


async def test_what_a_merchant_token_starts_its_user_never_approves(lnenv: LnEnv):
    """Xavier, an approver and an admin, acts for his own merchant and pays out of its
    wallet past the policy's threshold: he is the initiator (the token's user), so his
    own approval is refused and the payment waits for another approver."""
    env = lnenv
    xavier, xavier_key = await admin_with_totp(env.sessions, "xavier@example.com")
    async with env.sessions() as s, s.begin():
        y = await acc.create_user(s, email="y@example.com", is_admin=True)
        z = await acc.create_user(s, email="z@example.com", is_admin=True)
        shop = await acc.create_merchant(s, name="Shop", owner_user_id=xavier.id)
        shop_wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=shop.id)
        await add_approvers(s, group="treasury", user_ids=[xavier.id], admins=(y.id, z.id))
    await make_live(env.sessions, People(y.id, z.id, "", "", ""), [
        {"name": "big lightning", "action": "require_approval", "approvals": 1,
         "group": "treasury", "rails": ["lightning"], "min_amount_msat": 50_000 * SAT}])
    await fund(env, shop_wallet, 500_000 * SAT)
    as_shop, _ = await token_for(env.sessions, xavier, shop.id)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{shop_wallet.id}/withdrawals",
                         json={"destination": customer_invoice(env, 100_000 * SAT)},
                         headers={**bearer(as_shop), "Idempotency-Key": "w1"})
        assert r.status_code == 201 and r.json()["status"] == "awaiting_approval", r.text
        wid = r.json()["id"]
        r = await c.post(f"/api/v1/admin/withdrawals/{wid}/approve", headers=bearer(xavier_key))
        assert r.status_code == 403, r.text
    async with env.sessions() as s:
        assert (await s.get(Withdrawal, wid)).status == "awaiting_approval"


async def test_an_admin_acting_for_another_persons_merchant_moves_none_of_its_money(
        lnenv: LnEnv):
    """Ann, an admin, acts for Bob's shop with every scope she may ask for: she sees its
    wallet, and its money stays (withdrawals, payments to her own invoice, vouchers and
    allow-list entries are refused for want of the money scope, also after a refresh); Bob,
    its owner, acting for it moves its money."""
    from satvault.lightning.models import LnInvoice, LnInvoiceStatus
    from tests.lightning.test_refusal_budget import _bill

    env = lnenv
    ann, _ = await admin_with_totp(env.sessions, "ann@example.com")
    async with env.sessions() as s, s.begin():
        bob = await acc.create_user(s, email="bob@example.com", password="correct horse x1")
        shop = await acc.create_merchant(s, name="Bob's", owner_user_id=bob.id)
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=shop.id)
        anns = await acc.ensure_wallet(s, owner_type="user", owner_id=ann.id)
    await fund(env, wallet, 500_000 * SAT)
    mine = await _bill(env, anns, 100_000 * SAT)
    as_shop, scopes = await token_for(env.sessions, ann, shop.id)
    assert "withdrawals:write" not in scopes and "wallet:read" in scopes
    async with env.sessions() as s, s.begin():  # a family granted it before this rule
        await s.execute(text("UPDATE auth_token_families SET scopes = scopes || "
                             "' withdrawals:write' WHERE merchant_id = :m"), {"m": shop.id})
    base = f"/api/v1/wallets/{wallet.id}"
    async with api_client(env) as c:
        assert (await c.get(base, headers=bearer(as_shop))).status_code == 200
        for i, destination in enumerate([mine.bolt11, customer_invoice(env, 10_000 * SAT)]):
            r = await c.post(f"{base}/withdrawals", json={"destination": destination},
                             headers={**bearer(as_shop), "Idempotency-Key": f"t{i}"})
            assert r.status_code == 403 and "withdrawals:write" in r.text, r.text
            assert "does not own" in r.json()["detail"], r.text
        r = await c.post(f"{base}/lnurl-withdraw", headers=bearer(as_shop),
                         json={"amount_msat": 10_000 * SAT, "description": "gift"})
        assert r.status_code == 403, r.text
        r = await c.post(f"{base}/allowlist", headers=bearer(as_shop),
                         json={"destination": "02" + "ab" * 32, "label": "mine"})
        assert r.status_code == 403, r.text
        as_owner, owner_scopes = await token_for(env.sessions, bob, shop.id)
        assert "withdrawals:write" in owner_scopes
        r = await c.post(f"{base}/withdrawals",
                         json={"destination": customer_invoice(env, 10_000 * SAT)},
                         headers={**bearer(as_owner), "Idempotency-Key": "owner"})
        assert r.status_code == 201, r.text
    async with env.sessions() as s:
        assert (await s.get(LnInvoice, mine.id)).status == LnInvoiceStatus.OPEN
    assert (await env.balances(anns))["available"] == 0
    await env.check()
