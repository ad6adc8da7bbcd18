from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from satvault.rates import (
    BadRateResponse,
    FixedRateSource,
    Rate,
    RateService,
    RateUnavailable,
    SourceUnreachable,
    UnsupportedCurrency,
    build_rate_service,
)
from satvault.rates.service import parse_source_names
from tests.rates.fakes import (
    COINBASE_USD,
    COINGECKO_USD,
    KRAKEN_USD,
    T0,
    FakeClock,
    FakeExchange,
    ScriptedSource,
    forever,
    reply,
)


def gate() -> tuple[asyncio.Event, Callable[[], Awaitable[None]]]:
    """An answer that holds the fetch open until the event is set."""
    event = asyncio.Event()

    async def wait() -> None:
        await event.wait()

    return event, wait


# --- several sources ------------------------------------------------------------------------
async def test_every_source_is_asked_and_the_median_taken() -> None:
    primary, second = ScriptedSource("primary", "61000"), ScriptedSource("second", "62000")
    rate = await RateService([primary, second]).rate("USD")
    assert (rate.source, rate.minor_per_btc) == ("median(primary,second)", 6_150_000)
    assert (primary.calls, second.calls) == (1, 1)


async def test_primary_down_fallback_used_and_named() -> None:
    primary = ScriptedSource("primary", SourceUnreachable("HTTP 503"))
    second = ScriptedSource("second", BadRateResponse("answer has no ['last']"))
    third = ScriptedSource("third", "62000.50")
    rate = await RateService([primary, second, third]).rate("usd")
    assert rate == Rate("USD", 6_200_050, "third", rate.fetched_at)
    assert (primary.calls, second.calls, third.calls) == (1, 1, 1)


async def test_a_source_without_the_currency_falls_through() -> None:
    bitstamp = ScriptedSource("bitstamp", UnsupportedCurrency("no btcjpy pair"))
    gecko = ScriptedSource("coingecko", "9500000")
    rate = await RateService([bitstamp, gecko]).rate("JPY")
    assert (rate.source, rate.currency, rate.minor_per_btc) == ("coingecko", "JPY", 9_500_000)


async def test_a_hanging_source_is_cut_off_and_the_fallback_used() -> None:
    slow, fast = ScriptedSource("slow", forever), ScriptedSource("fast", "60000")
    rate = await RateService([slow, fast], source_timeout=0.05).rate("USD")
    assert rate.source == "fast"


async def test_a_source_answering_another_currency_is_not_trusted() -> None:
    class Confused(ScriptedSource):
        async def fetch(self, currency: str) -> Rate:
            return await super().fetch("EUR")

    rate = await RateService([Confused("confused"), ScriptedSource("ok")]).rate("USD")
    assert rate.source == "ok"


# --- everything down --------------------------------------------------------------------------
async def test_all_down_names_every_source_and_reason() -> None:
    sources = [
        ScriptedSource("kraken", SourceUnreachable("HTTP 503 from https://api.kraken.com/…")),
        ScriptedSource("coinbase", BadRateResponse("answer has no ['data']")),
        ScriptedSource("bitstamp", UnsupportedCurrency("no btcjpy pair")),
        ScriptedSource("slow", forever),
    ]
    with pytest.raises(RateUnavailable) as info:
        await RateService(sources, source_timeout=0.05).rate("JPY")
    err = info.value
    assert err.currency == "JPY"
    assert [name for name, _ in err.failures] == ["kraken", "coinbase", "bitstamp", "slow"]
    message = str(err)
    for part in ("kraken: HTTP 503", "coinbase: answer has no ['data']",
                 "bitstamp: no btcjpy pair", "slow: no answer within 0.05s"):
        assert part in message


async def test_no_source_quotes_it_is_unsupported_not_unavailable() -> None:
    sources = [ScriptedSource("a", UnsupportedCurrency("no ISK")),
               ScriptedSource("b", UnsupportedCurrency("no ISK either"))]
    with pytest.raises(UnsupportedCurrency, match="a: no ISK; b: no ISK either"):
        await RateService(sources).rate("ISK")


async def test_unknown_currency_asks_no_source() -> None:
    source = ScriptedSource("a")
    with pytest.raises(UnsupportedCurrency):
        await RateService([source]).rate("XYZ")
    assert source.calls == 0


async def test_failures_are_not_cached() -> None:
    source = ScriptedSource("a", SourceUnreachable("down"), "60000")
    service = RateService([source])
    with pytest.raises(RateUnavailable):
        await service.rate("USD")
    assert (await service.rate("USD")).minor_per_btc == 6_000_000
    assert source.calls == 2


# --- cache ------------------------------------------------------------------------------------
async def test_cached_within_ttl_refetched_after() -> None:
    clock = FakeClock()
    source = ScriptedSource("kraken", "60000", "61000")
    service = RateService([source], ttl_seconds=60, clock=clock)

    first = await service.rate("USD")
    clock.advance(59.9)
    again = await service.rate("usd")
    assert again == first  # original source and fetched_at, not re-stamped
    assert again.fetched_at == T0.replace(second=T0.second + 1)
    assert source.calls == 1

    clock.advance(0.1)  # 60 s after the fetch: expired
    fresh = await service.rate("USD")
    assert source.calls == 2
    assert fresh.minor_per_btc == 6_100_000
    assert fresh.fetched_at > first.fetched_at


async def test_cache_is_per_currency() -> None:
    source = ScriptedSource("a")
    service = RateService([source], clock=FakeClock())
    usd, eur = await service.rate("USD"), await service.rate("EUR")
    assert (usd.currency, eur.currency) == ("USD", "EUR")
    await service.rate("USD")
    await service.rate("EUR")
    assert source.calls == 2


async def test_a_fallback_rate_is_cached_with_its_source() -> None:
    clock = FakeClock()
    primary = ScriptedSource("primary", SourceUnreachable("down"), "70000")
    service = RateService([primary, ScriptedSource("fallback")], clock=clock)
    assert (await service.rate("USD")).source == "fallback"
    clock.advance(30)
    assert (await service.rate("USD")).source == "fallback"  # cached: primary not asked again
    assert primary.calls == 1


async def test_ttl_zero_always_refetches_and_forget_drops() -> None:
    source = ScriptedSource("a")
    service = RateService([source], ttl_seconds=0)
    await service.rate("USD")
    await service.rate("USD")
    assert source.calls == 2

    cached = RateService([source], clock=FakeClock())
    await cached.rate("USD")
    cached.forget("usd")
    await cached.rate("USD")
    cached.forget()
    await cached.rate("USD")
    assert source.calls == 5


# --- no thundering herd -----------------------------------------------------------------------
async def test_concurrent_callers_share_one_fetch() -> None:
    event, wait = gate()
    source = ScriptedSource("kraken", wait)
    service = RateService([source])
    callers = [asyncio.create_task(service.rate("USD")) for _ in range(50)]
    await asyncio.sleep(0)
    event.set()
    rates = await asyncio.gather(*callers)
    assert source.calls == 1
    assert len({id(r) for r in rates}) == 1


async def test_concurrent_callers_share_one_failure() -> None:
    event = asyncio.Event()

    class Down(ScriptedSource):
        async def fetch(self, currency: str) -> Rate:
            self.calls += 1
            await event.wait()
            raise SourceUnreachable("HTTP 502")

    source = Down("kraken")
    service = RateService([source])
    callers = [asyncio.create_task(service.rate("USD")) for _ in range(10)]
    await asyncio.sleep(0)
    event.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert source.calls == 1
    assert all(isinstance(r, RateUnavailable) for r in results)


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch() -> None:
    event, wait = gate()
    source = ScriptedSource("kraken", wait)
    service = RateService([source])
    impatient = asyncio.create_task(service.rate("USD"))
    patient = asyncio.create_task(service.rate("USD"))
    await asyncio.sleep(0)
    impatient.cancel()
    await asyncio.sleep(0)
    event.set()
    assert (await patient).source == "kraken"
    assert impatient.cancelled()
    assert source.calls == 1


async def test_different_currencies_fetch_in_parallel() -> None:
    event, wait = gate()
    source = ScriptedSource("a", wait)
    service = RateService([source])
    tasks = [asyncio.create_task(service.rate(c)) for c in ("USD", "EUR", "JPY")]
    for _ in range(3):  # callers start, then the fetch tasks they created
        await asyncio.sleep(0)
    assert source.calls == 3  # all three fetching at once, none waiting on another
    event.set()
    assert [r.currency for r in await asyncio.gather(*tasks)] == ["USD", "EUR", "JPY"]


async def test_concurrent_http_callers_make_one_request() -> None:
    exchange = FakeExchange()
    release = asyncio.Event()

    async def slow(_request: httpx.Request) -> httpx.Response:
        await release.wait()
        return reply(200, KRAKEN_USD)

    exchange.handler = slow
    service = build_rate_service("kraken", transport=exchange.transport())
    tasks = [asyncio.create_task(service.rate("USD")) for _ in range(20)]
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    assert {r.minor_per_btc for r in await asyncio.gather(*tasks)} == {6_701_235}
    assert exchange.count == 1
    await service.close()


# --- construction and shutdown ----------------------------------------------------------------
def test_service_checks() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RateService([])
    with pytest.raises(ValueError, match="unique"):
        RateService([ScriptedSource("a"), ScriptedSource("a")])
    with pytest.raises(ValueError, match="ttl"):
        RateService([ScriptedSource("a")], ttl_seconds=-1)


async def test_close_closes_sources_and_cancels_fetches() -> None:
    hanging, other = ScriptedSource("a", forever), ScriptedSource("b")
    service = RateService([hanging, other], source_timeout=None)
    task = asyncio.create_task(service.rate("USD"))
    await asyncio.sleep(0)
    await service.close()
    assert hanging.closed and other.closed
    with pytest.raises(asyncio.CancelledError):
        await task


# --- the settings-string factory, end to end over HTTP ----------------------------------------
def test_parse_source_names() -> None:
    assert parse_source_names(" Kraken, coinbase ,,fixed") == ["kraken", "coinbase", "fixed"]
    for bad, match in [("", "no rate sources"), ("kraken,krakn", "unknown rate source 'krakn'"),
                       ("kraken,kraken", "twice")]:
        with pytest.raises(ValueError, match=match):
            parse_source_names(bad)


def test_fixed_needs_prices() -> None:
    with pytest.raises(ValueError, match="needs fixed prices"):
        build_rate_service("fixed")


def by_host(**answers: httpx.Response) -> httpx.MockTransport:
    """One transport for every exchange, answering by host (api.kraken.com → kraken=…)."""
    hits: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        name = request.url.host.split(".")[-2]
        hits.append(name)
        return answers.get(name, reply(503, "down"))

    transport = httpx.MockTransport(handle)
    transport.hits = hits  # type: ignore[attr-defined]
    return transport


async def test_factory_primary_down_fallback_answers() -> None:
    transport = by_host(kraken=reply(503, "maintenance"), coinbase=reply(200, COINBASE_USD))
    service = build_rate_service("kraken,coinbase,fixed", {"USD": "60000"},
                                 transport=transport)
    assert service.source_names == ("kraken", "coinbase", "fixed")
    rate = await service.rate("USD")
    assert (rate.source, rate.minor_per_btc) == ("coinbase", 6_701_235)
    assert transport.hits == ["kraken", "coinbase"]  # type: ignore[attr-defined]
    await service.close()


async def test_factory_falls_back_to_fixed_when_exchanges_are_down() -> None:
    service = build_rate_service("kraken,bitstamp,fixed", {"USD": "60000.00"},
                                 transport=by_host())
    rate = await service.rate("USD")
    assert (rate.source, rate.minor_per_btc) == ("fixed", 6_000_000)
    await service.close()


async def test_factory_all_down_is_unavailable() -> None:
    service = build_rate_service("coingecko,kraken", transport=by_host(
        coingecko=reply(429, {"status": {"error_code": 429}}),
        kraken=reply(200, {"error": ["EService:Unavailable"]})))
    with pytest.raises(RateUnavailable, match=r"coingecko: HTTP 429.*kraken: .*EService"):
        await service.rate("USD")
    await service.close()


async def test_factory_coingecko_key() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(200, COINGECKO_USD)

    service = build_rate_service("coingecko", transport=httpx.MockTransport(handle),
                                 coingecko_api_key="k")
    assert (await service.rate("USD")).minor_per_btc == 6_701_235
    assert seen[0].headers["x-cg-demo-api-key"] == "k"
    await service.close()


async def test_fixed_only_service_for_the_demo() -> None:
    service = RateService([FixedRateSource({"USD": "60000", "JPY": "9500000"})])
    assert (await service.rate("JPY")).minor_per_btc == 9_500_000
    await service.close()


async def test_a_source_breaking_its_contract_is_a_failed_source_not_a_crash() -> None:
    """A plug-in source that raises something other than a RateError, or answers something
    other than a Rate, is one more failed source: the next one is asked, and when none is
    left the answer is RateUnavailable (503), not an exception from inside the plug-in."""
    class Raises(ScriptedSource):
        async def fetch(self, currency: str) -> Rate:
            raise httpx.ConnectError("the plug-in let its client's error out")

    class Junk(ScriptedSource):
        async def fetch(self, currency: str) -> Rate:
            return {"USD": 60000}  # type: ignore[return-value]

    rate = await RateService([Raises("raises"), Junk("junk"), ScriptedSource("ok")]).rate("USD")
    assert rate.source == "ok"
    with pytest.raises(RateUnavailable) as err:
        await RateService([Raises("raises"), Junk("junk")]).rate("USD")
    assert "raises" in str(err.value) and "junk" in str(err.value)
