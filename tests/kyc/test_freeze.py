"""Freezing a wallet: nothing leaves it on any rail (and the refusal costs nobody their
invoice), money still comes in, both actions audited with their reason; unfreezing lets
payments through again."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.accounts.models import AuditEvent
from satvault.lightning.invoices import create_invoice
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from tests.chainenv import LnEnv, api_client
from tests.kyc.helpers import OVERRIDES, RAILS, SAT, bench, problem
from tests.lightning.test_lightning import fund


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return OVERRIDES


async def test_frozen_wallet_refused_on_every_rail_then_allowed_after_unfreeze(lnenv: LnEnv):
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        url = f"/api/v1/admin/wallets/{env.wallet.id}"
        r = await c.post(f"{url}/freeze", headers=k.admin,
                         json={"reason": "court order 2026/17"})
        assert r.status_code == 200 and r.json()["frozen"] is True, r.text
        problem(await c.post(f"{url}/freeze", headers=k.admin, json={"reason": "again"}),
                422, "invalid-input")
        view = await k.wallet()
        assert view["frozen"] is True and view["frozen_reason"] == "court order 2026/17"
        assert all(x["max_now_msat"] == 0 for x in view["limits"].values())

        for rail in RAILS:
            body = await k.destination(rail, 1_000)
            refused = problem(await k.send(body), 403, "wallet-frozen")
            assert "court order 2026/17" in refused["detail"]
        # The refused internal payment did not take the payee's invoice off the node.
        async with env.sessions() as s:
            states = (await s.execute(select(LnInvoice.status).where(
                LnInvoice.wallet_id == k.payee.id))).scalars().all()
        assert states == [LnInvoiceStatus.OPEN]
        # Money still comes in: an internal payment to the frozen wallet is credited.
        before = (await k.wallet())["available_msat"]
        async with env.sessions() as s, s.begin():
            bill = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                        amount_msat=2_000 * SAT)
            _, token = await acc.create_api_key(s, owner_id=k.payee.owner_id,
                                                scopes=["wallet:read", "withdrawals:write"])
        await fund(env, k.payee, 100_000 * SAT)
        r = await c.post(f"/api/v1/wallets/{k.payee.id}/withdrawals",
                         headers={"Authorization": f"Bearer {token}",
                                  "Idempotency-Key": "in"},
                         json={"destination": bill.bolt11})
        assert r.status_code == 201 and r.json()["method"] == "internal", r.text
        assert (await k.wallet())["available_msat"] == before + 2_000 * SAT

        problem(await c.post(f"{url}/unfreeze", headers=k.payer, json={"reason": "x"}), 403,
                "forbidden")
        r = await c.post(f"{url}/unfreeze", headers=k.admin, json={"reason": "order lifted"})
        assert r.status_code == 200 and r.json()["frozen"] is False, r.text
        for rail in RAILS:
            r = await k.pay(rail, 1_000)
            assert r.status_code == 201, r.text
    async with env.sessions() as s:
        rows = (await s.execute(select(AuditEvent).where(
            AuditEvent.object == env.wallet.id).order_by(AuditEvent.id))).scalars().all()
    assert [(a.action, a.actor, json.loads(a.state_after)["reason"]) for a in rows] == [
        ("wallet.freeze", k.admin_id, "court order 2026/17"),
        ("wallet.unfreeze", k.admin_id, "order lifted")]
    await env.check()


async def test_a_freeze_reason_with_hidden_direction_characters_is_refused(lnenv: LnEnv):
    """Found from outside: a freeze reason took a right-to-left override, and the reason is
    shown to operators and in the refusal every payment of the wallet gets. Refused with a
    clear error, nothing frozen; a reason over several lines is still a reason."""
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        url = f"/api/v1/admin/wallets/{env.wallet.id}"
        for reason in ("court \u202eredro", "hidden\u200bword", "bell\x07"):
            refused = problem(await c.post(f"{url}/freeze", headers=k.admin,
                                           json={"reason": reason}), 422, "invalid-input")
            assert "U+" in refused["detail"], refused
        assert (await k.wallet())["frozen"] is False
        r = await c.post(f"{url}/freeze", headers=k.admin,
                         json={"reason": "court order 2026/17\nsee ticket 42"})
        assert r.status_code == 200 and r.json()["frozen"] is True, r.text
        problem(await c.post(f"{url}/unfreeze", headers=k.admin,
                             json={"reason": "lifted \u202e"}), 422, "invalid-input")
        assert (await k.wallet())["frozen"] is True
