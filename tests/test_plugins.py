"""Plug-ins: the example package in tests/plugins/example (installed by `make test`) offers
one extension of each kind through entry points; satvault finds and uses them by name."""

from __future__ import annotations

import json

import pytest

from satvault.accounts import service as acc
from satvault.backends.registry import make_chain_backend
from satvault.composition import make_lightning_backend
from satvault.kernel.errors import InvalidInput
from satvault.kernel.plugins import GROUPS, PluginError, load_plugin, plugin_names
from satvault.rates.service import build_rate_service
from satvault.risk.rules import Outcome
from satvault.simnet.chain import Chain
from satvault.simnet.rpc import SimnetServer
from tests.chainenv import make_settings
from tests.risk.conftest import Ctx, default_doc

SAT = 1000


@pytest.fixture
async def ctx(sessions) -> Ctx:
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="plugins@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
    return Ctx(sessions, wallet)


@pytest.fixture(autouse=True, scope="module")
def _installed() -> None:
    if "example" not in plugin_names("rate_sources"):
        pytest.fail("the example plug-in is not installed: `make test` installs it "
                    "(pip install --no-deps ./tests/plugins/example)")


def test_installed_plug_ins_are_found_by_group():
    assert {g: plugin_names(g) for g in GROUPS} == {
        "rate_sources": ("example",), "chain_backends": ("example",),
        "lightning_backends": ("example",),
        "risk_features": ("broken", "raising", "round_amount"), "notifiers": ("jsonl",)}
    with pytest.raises(PluginError, match="no rate_sources plug-in named 'nope'"):
        load_plugin("rate_sources", "nope")
    with pytest.raises(PluginError, match=r"'broken' \(satvault_example_plugin.missing_module"
                                          r":NOTHING, from the package satvault-example"):
        load_plugin("risk_features", "broken")


async def test_a_rate_source_plug_in_is_chosen_by_name():
    rates = build_rate_service("example,fixed", {"USD": "60000"})
    try:
        rate = await rates.rate("USD")
        assert (rate.source, rate.minor_per_btc) == ("example", 5_432_109)
    finally:
        await rates.close()
    with pytest.raises(ValueError, match=r"unknown rate source 'exampel': use kraken, .*example"):
        build_rate_service("exampel")


async def test_backend_plug_ins_are_chosen_by_name_and_speak_to_the_node(tmp_path):
    chain = Chain()
    server = SimnetServer(chain, port=0, user="u", password="p")
    server.start()
    try:
        chain.mine(3)
        settings = make_settings("sqlite+aiosqlite://", tmp_path, server.url,
                                 chain_backend="example", lightning_backend="example")
        backend = make_chain_backend(settings)
        assert getattr(backend, "made_by", None) == "satvault-example-plugin"
        assert (await backend.tip()).height == chain.height
        await backend.close()
        ln = make_lightning_backend(settings)
        assert getattr(ln, "made_by", None) == "satvault-example-plugin"
        assert ln is not None
        await ln.close()
        with pytest.raises(ValueError, match="unknown chain_backend 'bitcoinj': use simnet, "
                                             "bitcoind, esplora, example"):
            make_chain_backend(make_settings("sqlite+aiosqlite://", tmp_path, server.url,
                                             chain_backend="bitcoinj"))
    finally:
        server.stop()


def _with_rule(rule: dict) -> dict:
    doc = default_doc()
    doc["rules"].append(rule)
    return doc


async def test_a_risk_feature_plug_in_scores_and_is_stored_with_the_decision(ctx: Ctx):
    await ctx.live(_with_rule({"id": "round_amount", "score": 40, "when": {
        "field": "plugin.round_amount", "op": "gte", "value": 6}}))
    odd = await ctx.screen(ctx.event(1_234_567 * SAT))
    assert odd.features["plugin.round_amount"] == 0 and odd.outcome == Outcome.APPROVE
    round_ = await ctx.screen(ctx.event(2_000_000 * SAT))
    assert round_.features["plugin.round_amount"] == 6
    assert round_.outcome == Outcome.REVIEW and round_.verdict.score >= 40
    hit = next(r for r in round_.verdict.results if r.id == "round_amount")
    assert hit.matched and hit.inputs == {"plugin.round_amount": 6}


async def test_rules_naming_a_missing_or_broken_plug_in_are_refused(ctx: Ctx):
    from satvault.risk import service as risk

    for field, message in (("plugin.nope", "unknown field 'plugin.nope'"),
                           ("plugin.broken", "failed to load")):
        async with ctx.sessions() as s, s.begin():
            with pytest.raises(InvalidInput, match=message):
                await risk.propose_rule_set(s, rules=_with_rule({
                    "id": "x", "score": 1, "when": {"field": field, "op": "gt",
                                                    "value": 1}}), actor="user:admin-a")


async def test_a_failing_plug_in_holds_the_payment_for_review(ctx: Ctx):
    doc = _with_rule({"id": "plugin_says", "score": 1, "when": {
        "field": "plugin.raising", "op": "eq", "value": True}})
    await ctx.live(doc)
    s = await ctx.screen(ctx.event(1_234 * SAT))
    assert s.features["plugin_errors"] == ["raising"] and s.features["plugin.raising"] is None
    said = next(r for r in s.verdict.results if r.id == "plugin_says")
    assert not said.matched and s.verdict.score < doc["thresholds"]["review"]
    assert s.outcome == Outcome.REVIEW  # the score alone would approve
    assert json.loads(json.dumps(s.features))["plugin_errors"] == ["raising"]


async def test_a_notifier_plug_in_is_told_of_alerts(sessions, tmp_path, monkeypatch):
    from satvault.composition import alerts_worker

    out = tmp_path / "alerts.jsonl"
    monkeypatch.setenv("SATVAULT_EXAMPLE_NOTIFY_FILE", str(out))
    settings = make_settings("sqlite+aiosqlite://", tmp_path, "http://127.0.0.1:9",
                             alert_notifiers="jsonl", semicold_floor_sat=10_000)
    worker = alerts_worker(settings, sessions, None)
    try:
        await worker._tick()  # an empty semi-cold wallet is under its floor
        await worker._tick()  # told once, not on every tick
    finally:
        await worker.stop()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(a["type"], a["alert"]) for a in lines] == [
        ("alert.firing", "hot_wallet_under_floor")]
    with pytest.raises(PluginError, match="no notifiers plug-in named 'pager'"):
        alerts_worker(make_settings("sqlite+aiosqlite://", tmp_path, "http://127.0.0.1:9",
                                    alert_notifiers="pager"), sessions, None)
