"""GET /metrics on a running server (uvicorn on a local port), parsed with prometheus_client's
own parser: the figures follow what happens through the API (an invoice, a Lightning payment,
blocks the watcher has not processed yet), the bearer token is enforced, and every expression
of the shipped Prometheus rules names a metric the scrape exposes."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from satvault.accounts import service as acc
from satvault.web.app import create_app
from tests.chainenv import LnEnv, api_client
from tests.lightning.test_lightning import fund
from tests.liveserver import serve

SAT = 1000
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


class Scrape:
    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float | None:
        for family in self.families.values():
            for s in family.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return None

    def names(self) -> set[str]:
        out = set(self.families)
        for f in self.families.values():
            out |= {s.name for s in f.samples}
            if f.type == "counter":
                out.add(f.name + "_total")
            if f.type == "histogram":
                out |= {f.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        return out


async def scrape(client: httpx.AsyncClient, base: str) -> Scrape:
    r = await client.get(f"{base}/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return Scrape(r.text)


async def test_a_live_scrape_follows_invoices_payments_and_blocks(lnenv: LnEnv):
    env = lnenv
    await env.runtime.watcher.step()
    async with env.sessions() as s, s.begin():
        merchant = await acc.create_merchant(s, name="Shop")
        store = await acc.create_store(s, merchant_id=merchant.id, name="Web")
        _, store_key = await acc.create_api_key(s, owner_id=store.id,
                                                scopes=["invoices:write", "invoices:read"])
        _, wallet_key = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
    app = create_app(env.settings, engine=env.sessions.kw["bind"], start_workers=False,
                     runtime=env.runtime)
    async with serve(app, lifespan=True) as base, httpx.AsyncClient(timeout=20) as c:
        before = await scrape(c, base)
        assert before.value("satvault_invoices", status="new") == 0
        assert before.value("satvault_withdrawals", rail="lightning", status="confirmed") == 0
        assert before.value("satvault_node_up", node="chain") == 1
        assert before.value("satvault_node_up", node="lightning") == 1
        assert before.value("satvault_watcher_lag_blocks") == 0
        assert before.value("satvault_lightning_liquidity_msat", direction="out") > 0
        assert before.value("satvault_risk_decisions_total", outcome="approve") == 0
        assert before.value("satvault_custody_ledger_sat", tier="semicold") == 0
        assert before.value("satvault_payment_success_ratio", rail="lightning") is None
        paid_before = before.value("satvault_payments_total", rail="lightning",
                                   outcome="succeeded") or 0
        timed_before = before.value("satvault_payment_duration_seconds_count",
                                    rail="lightning") or 0

        r = await c.post(f"{base}/api/v1/stores/{store.id}/invoices",
                         headers={"Authorization": f"Bearer {store_key}",
                                  "Idempotency-Key": "m-1"},
                         json={"amount": "1000", "currency": "SATS"})
        assert r.status_code == 201, r.text
        await fund(env, env.wallet, 200_000 * SAT)
        bolt11 = env.network.create_invoice("customer2", 50_000 * SAT).bolt11
        r = await c.post(f"{base}/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={"Authorization": f"Bearer {wallet_key}",
                                  "Idempotency-Key": "m-2"},
                         json={"destination": f"lightning:{bolt11}"})
        assert r.status_code == 201, r.text
        await env.runtime.payer.step()
        env.chain.mine(2)  # the watcher has not seen them yet

        after = await scrape(c, base)
        assert after.value("satvault_invoices", status="new") == 1
        assert after.value("satvault_withdrawals", rail="lightning", status="confirmed") == 1
        assert after.value("satvault_payment_success_ratio", rail="lightning") == 1.0
        assert after.value("satvault_payments_total", rail="lightning",
                           outcome="succeeded") == paid_before + 1
        assert after.value("satvault_payment_duration_seconds_count",
                           rail="lightning") == timed_before + 1
        assert after.value("satvault_watcher_lag_blocks") == 2
        assert after.value("satvault_chain_tip_height") == \
            after.value("satvault_watcher_height") + 2
        # the users' balances are liabilities: 200,000 sat in, 50,000 sat and its fee out
        liabilities = after.value("satvault_liabilities_msat")
        assert 149_000 * SAT < liabilities < 150_000 * SAT
        assert after.value("satvault_http_request_duration_seconds_count", method="POST",
                           route="/api/v1/stores/{store_id}/invoices", status="2xx") >= 1

        # every rule of the shipped file reads metrics this scrape has
        exposed = after.names()
        rules = yaml.safe_load(RULES.read_text())
        exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
        assert len(exprs) >= 10
        for expr in exprs:
            named = set(re.findall(r"\bsatvault_[a-z_]+", expr))
            assert named, expr
            assert named <= exposed, (expr, named - exposed)
        alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
        assert {"SatvaultReconciliationDifference", "SatvaultSignerRefusal",
                "SatvaultHotWalletUnderFloor", "SatvaultWatcherStalled",
                "SatvaultNodeDown"} <= alerts


async def test_the_metrics_token_is_required_when_set(lnenv: LnEnv):
    env = lnenv
    env.settings = env.settings.model_copy(update={"metrics_token": SecretStr("scrape-me-0123")})
    async with api_client(env) as c:
        assert (await c.get("/metrics")).status_code == 401
        bad = await c.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        ok = await c.get("/metrics", headers={"Authorization": "Bearer scrape-me-0123"})
        assert ok.status_code == 200
        assert "satvault_invoices" in Scrape(ok.text).families
        # not an API endpoint: absent from the OpenAPI document
        assert "/metrics" not in (await c.get("/openapi.json")).json()["paths"]


def test_with_a_multiprocess_directory_a_scrape_adds_every_process_up(tmp_path):
    """prometheus_client picks its storage when first imported, so this needs fresh
    processes: two count a payment each, a third renders the event metrics."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    count = ("from satvault.telemetry import PAYMENTS; "
             "PAYMENTS.labels('lightning', 'succeeded').inc()")
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, check=True)
    render = ("from prometheus_client import CollectorRegistry, generate_latest; "
              "from satvault.telemetry import EventCollector; "
              "r = CollectorRegistry(); r.register(EventCollector()); "
              "print(generate_latest(r).decode())")
    out = subprocess.run([sys.executable, "-c", render], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert Scrape(out).value("satvault_payments_total", rail="lightning",
                             outcome="succeeded") == 2
