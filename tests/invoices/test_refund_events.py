"""A refund names its invoice wherever the merchant sees it: in every ``withdrawal.*`` event
(webhooks and live updates) and in the withdrawal the API returns. Found from outside: the
events were written before the refund was linked to its invoice, so a merchant's webhook
receiver could not tell a refund from a payout, nor which order it refunded."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.events.models import OutboxEvent
from satvault.lightning.invoices import create_invoice
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import paid_lightning_invoice, shop  # noqa: F401
from tests.invoices.test_refund_amounts import fund_merchant

SAT = 1000


async def withdrawal_events(env: LnEnv, withdrawal_id: str) -> list[tuple[str, dict]]:
    async with env.sessions() as s:
        rows = (await s.execute(select(OutboxEvent).where(
            OutboxEvent.subject_type == "withdrawal",
            OutboxEvent.subject_id == withdrawal_id).order_by(OutboxEvent.id))).scalars()
        return [(e.type, json.loads(e.payload)) for e in rows]


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_create": "1000/second"}])
async def test_every_refund_event_names_its_invoice(lnenv: LnEnv, shop):  # noqa: F811
    env = lnenv
    await fund_merchant(env, shop)
    bob = await env.wallet_for("bob@example.com")
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=shop["store"], scopes=[
            "invoices:read", "withdrawals:write", "wallet:read"])
    refunder = {"Authorization": f"Bearer {token}"}
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "named", sats=30_000)
        async with env.sessions() as s, s.begin():
            ours = await create_invoice(s, backend=env.runtime.lightning, wallet=bob,
                                        amount_msat=5_000 * SAT, memo="refund inside")
        destinations = {
            "onchain": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            "lightning": env.network.create_invoice("customer2", 5_000 * SAT).bolt11,
            "internal": ours.bolt11,
        }
        refunds = {}
        for method, destination in destinations.items():
            r = await c.post(f"/api/v1/invoices/{inv['id']}/refunds",
                             headers={**refunder, "Idempotency-Key": f"named-{method}"},
                             json={"destination": destination, "amount_msat": 5_000 * SAT})
            assert r.status_code == 201, r.text
            assert r.json()["method"] == method
            assert r.json()["invoice_id"] == inv["id"]
            refunds[method] = r.json()["id"]
        await env.runtime.payer.step()
        for method, wid in refunds.items():
            events = await withdrawal_events(env, wid)
            assert events, method
            assert {p["invoice_id"] for _t, p in events} == {inv["id"]}, (method, events)
            assert "withdrawal.created" in [t for t, _p in events]
            got = await c.get(f"/api/v1/withdrawals/{wid}", headers=refunder)
            assert got.status_code == 200, got.text
            assert got.json()["invoice_id"] == inv["id"]
        # A payout that refunds nothing says so.
        plain = await c.post(f"/api/v1/wallets/{shop['wallet'].id}/withdrawals",
                             headers={**refunder, "Idempotency-Key": "plain"},
                             json={"destination": destinations["onchain"],
                                   "amount_msat": 5_000 * SAT})
        assert plain.status_code == 201, plain.text
        assert plain.json()["invoice_id"] is None
        assert {p["invoice_id"] for _t, p in await withdrawal_events(env, plain.json()["id"])
                } == {None}
    await env.check()
