"""A Lightning deposit the risk rules freeze is announced on the wallet's event stream, with
``frozen_msat`` as the wallet API shows it (found from outside, stop 32: no event was
written, and the dashboard's Frozen figure, which follows that event, never moved). Its
release announces the frozen sub-balance back at 0."""
from __future__ import annotations

import json

from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.events.models import OutboxEvent
from satvault.lightning.invoices import InvoiceListener, create_invoice
from satvault.risk.frozen import release_frozen_deposit
from satvault.risk.models import RiskFrozenDeposit
from tests.chainenv import LnEnv, api_client
from tests.risk.test_deposits import _lightning_rules

SAT = 1000


async def test_a_frozen_lightning_deposit_sends_a_balance_event_with_frozen(lnenv: LnEnv):
    env = lnenv
    await _lightning_rules(env)
    async with env.sessions() as s, s.begin():
        big = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                   amount_msat=9_000 * SAT)
    async with env.sessions() as s:
        top = (await s.execute(select(OutboxEvent.id).order_by(OutboxEvent.id.desc())
                               .limit(1))).scalar() or 0
    listener = InvoiceListener(env.sessions, env.runtime.lightning, node="lnd",
                               deposit_screen=env.runtime.deposit_screen)
    env.network.pay("customer1", big.bolt11)
    assert await listener.handle(big.payment_hash, big.amount_msat, 0)
    async with env.sessions() as s:
        rows = (await s.execute(select(OutboxEvent).where(
            OutboxEvent.id > top, OutboxEvent.wallet_id == env.wallet.id))).scalars().all()
    async with env.sessions() as s, s.begin():
        _, key = await acc.create_api_key(s, owner_id=env.wallet.owner_id,
                                          scopes=["wallet:read"])
    async with api_client(env) as c:
        api = (await c.get(f"/api/v1/wallets/{env.wallet.id}",
                           headers={"Authorization": f"Bearer {key}"})).json()
    assert api["frozen_msat"] == 9_000 * SAT
    types = [r.type for r in rows]
    assert "wallet.balance_changed" in types, types  # the money arrived, frozen
    last = json.loads([r for r in rows if r.type == "wallet.balance_changed"][-1].payload)
    assert last.get("frozen_msat") == 9_000 * SAT, last
    assert last["available_msat"] == api["available_msat"]
    async with env.sessions() as s:
        row = (await s.execute(select(RiskFrozenDeposit))).scalar_one()
    async with env.sessions() as s, s.begin():
        await release_frozen_deposit(s, decision_id=row.decision_id, actor="user:officer")
    async with env.sessions() as s:
        released = (await s.execute(select(OutboxEvent).where(
            OutboxEvent.id > rows[-1].id, OutboxEvent.wallet_id == env.wallet.id,
            OutboxEvent.type == "wallet.balance_changed"))).scalars().all()
    payload = json.loads(released[-1].payload)
    assert (payload["frozen_msat"], payload["available_msat"]) == (0, 9_000 * SAT), payload
    await env.check()
