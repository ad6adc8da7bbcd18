"""Rates are compared, not trusted: invoices in fiat over HTTP priced at the median of the
sources that answered, refused (503, no invoice) when too few answered, when they disagree,
or when the price jumped too far from the last one accepted for that currency."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.config import Settings
from satvault.invoices.models import StoreInvoice
from satvault.rates import FixedRateSource, RateService, SourceUnreachable
from tests.chainenv import Env, api_client
from tests.rates.fakes import FakeClock, ScriptedSource


@pytest.fixture
async def shop(env: Env) -> dict:
    async with env.sessions() as s, s.begin():
        merchant = await acc.create_merchant(s, name="Shop")
        store = await acc.create_store(s, merchant_id=merchant.id, name="Web")
        _, key = await acc.create_api_key(s, owner_id=store.id,
                                          scopes=["invoices:write", "invoices:read"])
    return {"store": store.id, "key": {"Authorization": f"Bearer {key}"}}


async def usd_invoice(c: httpx.AsyncClient, shop: dict, idem: str) -> httpx.Response:
    return await c.post(f"/api/v1/stores/{shop['store']}/invoices",
                        headers={**shop["key"], "Idempotency-Key": idem},
                        json={"amount": "10.00", "currency": "USD",
                              "payment_methods": ["onchain"]})


async def invoices(env: Env) -> int:
    async with env.sessions() as s:
        return (await s.execute(select(func.count()).select_from(StoreInvoice))).scalar_one()


def use(env: Env, service: RateService) -> None:
    env.runtime.rates = service  # the runtime closes it with the environment


async def test_the_median_of_the_sources_that_answered_prices_the_invoice(env: Env, shop):
    """Four sources (one down): the median of the three answers, named with its sources."""
    sources = [ScriptedSource("kraken", "60000"), ScriptedSource("coinbase", "60900"),
               ScriptedSource("bitstamp", SourceUnreachable("HTTP 503")),
               ScriptedSource("coingecko", "60300")]
    use(env, RateService(sources, ttl_seconds=0))
    async with api_client(env) as c:
        inv = (await usd_invoice(c, shop, "m")).json()
    assert inv["rate"]["minor_units_per_btc"] == 6_030_000
    assert inv["rate"]["source"] == "median(kraken,coinbase,coingecko)"
    assert inv["amount_msat"] == -(-1000 * 10**11 // 6_030_000)
    assert all(s.calls == 1 for s in sources)  # every source asked, not only the first
    await env.check()


async def test_an_even_count_takes_the_lower_middle_mean_and_a_long_name_is_kept(env: Env, shop):
    """Two middle answers: their mean rounded down (more sats for the merchant). The source
    names are kept whole, however long."""
    names = ("kraken", "coinbase", "bitstamp", "coingecko")
    prices = ("60000", "60001.01", "60002.00", "60100")
    use(env, RateService([ScriptedSource(n, p) for n, p in zip(names, prices, strict=True)],
                         ttl_seconds=0))
    async with api_client(env) as c:
        inv = (await usd_invoice(c, shop, "e")).json()
    assert inv["rate"]["minor_units_per_btc"] == (6_000_101 + 6_000_200) // 2
    assert inv["rate"]["source"] == "median(kraken,coinbase,bitstamp,coingecko)"
    await env.check()


async def test_sources_that_disagree_are_refused(env: Env, shop):
    """One source 10% above the others: beyond the 3% default, so no invoice at all."""
    use(env, RateService([ScriptedSource("a", "60000"), ScriptedSource("b", "60100"),
                          ScriptedSource("c", "66000")], ttl_seconds=0))
    async with api_client(env) as c:
        r = await usd_invoice(c, shop, "d")
    assert r.status_code == 503, r.text
    problem = r.json()
    assert problem["type"].endswith("rate-unavailable")
    assert "disagree" in problem["detail"] and "c: 66000.00" in problem["detail"]
    assert await invoices(env) == 0
    await env.check()


async def test_too_few_answers_are_refused(env: Env, shop):
    """Two of three required; one answered."""
    use(env, RateService([ScriptedSource("a", "60000"),
                          ScriptedSource("b", SourceUnreachable("HTTP 503")),
                          ScriptedSource("c", SourceUnreachable("timed out"))],
                         ttl_seconds=0, min_sources=2))
    async with api_client(env) as c:
        r = await usd_invoice(c, shop, "f")
    assert r.status_code == 503, r.text
    assert "1 of 3 rate sources answered" in r.json()["detail"]
    assert "b: HTTP 503" in r.json()["detail"]
    assert await invoices(env) == 0
    await env.check()


async def test_a_jump_from_the_last_accepted_rate_is_refused_until_it_is_old(env: Env, shop):
    """60000 accepted; 75000 (+25%) five minutes later is refused; 66000 (+10%) is accepted
    and becomes the reference; after the window 80000 (+21% of 66000) is accepted."""
    clock = FakeClock()
    source = ScriptedSource("a", "60000", "75000", "66000", "80000")
    use(env, RateService([source], ttl_seconds=0, clock=clock))
    async with api_client(env) as c:
        assert (await usd_invoice(c, shop, "1")).status_code == 201
        clock.advance(5 * 60)
        r = await usd_invoice(c, shop, "2")
        assert r.status_code == 503, r.text
        assert "moved 25.00%" in r.json()["detail"]
        assert await invoices(env) == 1
        clock.advance(60)
        ok = await usd_invoice(c, shop, "3")
        assert ok.json()["rate"]["minor_units_per_btc"] == 6_600_000
        clock.advance(60 * 60 + 1)
        late = await usd_invoice(c, shop, "4")
        assert late.status_code == 201, late.text
        assert late.json()["rate"]["minor_units_per_btc"] == 8_000_000
    assert await invoices(env) == 3
    await env.check()


async def test_fixed_behind_live_sources_is_a_fallback_not_a_vote(env: Env, shop):
    """The demo prices never outvote an exchange; they price invoices only when every live
    source is down, as before."""
    live = ScriptedSource("kraken", "67000", SourceUnreachable("down"))
    use(env, RateService([live, FixedRateSource({"USD": "60000"})], ttl_seconds=0))
    async with api_client(env) as c:
        first = (await usd_invoice(c, shop, "k")).json()
        second = (await usd_invoice(c, shop, "x")).json()
    assert (first["rate"]["source"], first["rate"]["minor_units_per_btc"]) == (
        "kraken", 6_700_000)
    assert (second["rate"]["source"], second["rate"]["minor_units_per_btc"]) == (
        "fixed", 6_000_000)
    await env.check()


def test_more_sources_required_than_configured_is_refused_at_startup():
    with pytest.raises(ValueError, match="rate_min_sources"):
        Settings(rate_sources="kraken,fixed", rate_min_sources=2)
    Settings(rate_sources="kraken,coinbase,fixed", rate_min_sources=2)
