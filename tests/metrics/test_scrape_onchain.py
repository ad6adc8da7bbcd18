"""GET /metrics on a running server for the on-chain rail: a deposit credited by the chain
watcher and a withdrawal broadcast and confirmed (through the API, on simnet) show in the same
payment metrics as Lightning's, under ``rail="onchain"``, parsed with prometheus_client's
own parser."""

from __future__ import annotations

import httpx

from satvault.accounts import service as acc
from satvault.web.app import create_app
from tests.chainenv import Env
from tests.liveserver import serve
from tests.metrics.test_scrape import Scrape, scrape

SAT = 1000
DEST = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"


def counters(s: Scrape) -> dict[str, float]:
    """The event counters this test moves (process-wide: compared before and after)."""
    return {
        "credited": s.value("satvault_payments_received_total", rail="onchain",
                            outcome="credited") or 0,
        "broadcast": s.value("satvault_payments_total", rail="onchain",
                             outcome="broadcast") or 0,
        "succeeded": s.value("satvault_payments_total", rail="onchain",
                             outcome="succeeded") or 0,
        "timed": s.value("satvault_payment_duration_seconds_count", rail="onchain") or 0,
        "ln_credited": s.value("satvault_payments_received_total", rail="lightning",
                               outcome="credited") or 0,
    }


async def test_an_onchain_deposit_and_withdrawal_show_in_the_payment_metrics(env: Env):
    async with env.sessions() as s, s.begin():
        _, key = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "wallet:write", "withdrawals:write"])
    auth = {"Authorization": f"Bearer {key}"}
    w = env.wallet.id
    app = create_app(env.settings, engine=env.sessions.kw["bind"], start_workers=False,
                     runtime=env.runtime)
    async with serve(app, lifespan=True) as base, httpx.AsyncClient(timeout=20) as c:
        before = await scrape(c, base)
        start = counters(before)
        assert before.value("satvault_payment_success_ratio", rail="onchain") is None
        assert before.value("satvault_withdrawals", rail="onchain", status="confirmed") == 0

        # A deposit: seen in the mempool (not credited yet), then confirmed and credited.
        r = await c.post(f"{base}/api/v1/wallets/{w}/deposits", headers=auth,
                         json={"method": "onchain", "amount_msat": 300_000 * SAT})
        assert r.status_code == 201, r.text
        env.chain.pay(r.json()["bip21"])
        await env.runtime.watcher.step()
        seen = counters(await scrape(c, base))
        assert seen["credited"] == start["credited"]  # not final yet
        env.chain.mine(1)
        await env.runtime.watcher.step()
        credited = counters(await scrape(c, base))
        assert credited["credited"] == start["credited"] + 1
        await env.sweep()  # a move between our own wallets: no payment either way
        assert counters(await scrape(c, base))["credited"] == start["credited"] + 1

        # A withdrawal: broadcast (not final), then confirmed.
        r = await c.post(f"{base}/api/v1/wallets/{w}/withdrawals",
                         headers={**auth, "Idempotency-Key": "oc-1"},
                         json={"destination": f"bitcoin:{DEST}?amount=0.001"})
        assert r.status_code == 201, r.text
        await env.runtime.payouts.step()
        sent = await scrape(c, base)
        assert counters(sent)["broadcast"] == start["broadcast"] + 1
        assert counters(sent)["succeeded"] == start["succeeded"]
        assert sent.value("satvault_withdrawals", rail="onchain", status="broadcast") == 1
        env.chain.mine(1)
        await env.runtime.watcher.step()
        await env.runtime.payouts.step()
        await env.runtime.payouts.step()  # nothing more: counted once
        after = await scrape(c, base)
        end = counters(after)
        assert end["broadcast"] == start["broadcast"] + 1
        assert end["succeeded"] == start["succeeded"] + 1
        assert end["timed"] == start["timed"] + 1
        assert end["ln_credited"] == start["ln_credited"]  # the other rail did not move
        assert after.value("satvault_withdrawals", rail="onchain", status="confirmed") == 1
        assert after.value("satvault_payment_success_ratio", rail="onchain") == 1.0
        # the same names, the rail a label: one family for both rails
        family = after.families["satvault_payments"]
        assert {s.labels["rail"] for s in family.samples} >= {"onchain"}
        assert after.families["satvault_payments_received"].type == "counter"
    await env.check()
