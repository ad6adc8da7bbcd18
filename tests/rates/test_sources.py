"""The contract every HTTP rate source passes against a fake exchange, then what is peculiar
to each (Kraken's pair names, CoinGecko's empty answer, …), then real sockets for timeouts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from satvault.rates import (
    BadRateResponse,
    BitstampSource,
    CoinbaseSource,
    CoinGeckoSource,
    FixedRateSource,
    KrakenSource,
    Rate,
    SourceUnreachable,
    UnsupportedCurrency,
)
from satvault.rates._http import HttpRateSource
from tests.rates.fakes import (
    BITSTAMP_USD,
    COINBASE_NOT_FOUND,
    COINBASE_USD,
    COINGECKO_UNQUOTED,
    COINGECKO_USD,
    KRAKEN_UNKNOWN_PAIR,
    KRAKEN_USD,
    T0,
    FakeExchange,
)


@dataclass(frozen=True)
class Case:
    cls: type[HttpRateSource]
    url: str  # what a USD request must ask for
    ok: Any  # the documented BTC/USD answer, 67012.35
    no_price: Any  # a well-formed answer without the price
    unsupported: tuple[int, Any]  # how the exchange says it does not quote a currency

    def __str__(self) -> str:
        return self.cls.name


CASES = [
    Case(KrakenSource, "https://api.kraken.com/0/public/Ticker?pair=XBTUSD", KRAKEN_USD,
         {"error": [], "result": {"XXBTZUSD": {"a": ["1", "1", "1"]}}},
         (200, KRAKEN_UNKNOWN_PAIR)),
    Case(CoinbaseSource, "https://api.coinbase.com/v2/prices/BTC-USD/spot", COINBASE_USD,
         {"data": {"base": "BTC", "currency": "USD"}}, (404, COINBASE_NOT_FOUND)),
    Case(BitstampSource, "https://www.bitstamp.net/api/v2/ticker/btcusd/", BITSTAMP_USD,
         {"timestamp": "1767323045", "bid": "1"}, (404, "<html>Not found</html>")),
    Case(CoinGeckoSource,
         "https://api.coingecko.com/api/v3/simple/price?ids=bitcoin&vs_currencies=usd",
         COINGECKO_USD, {"ethereum": {"usd": 1}}, (200, COINGECKO_UNQUOTED)),
]


@pytest.fixture(params=CASES, ids=str)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def exchange() -> FakeExchange:
    return FakeExchange()


@pytest.fixture
async def source(case: Case, exchange: FakeExchange) -> AsyncIterator[HttpRateSource]:
    src = case.cls(transport=exchange.transport(), timeout=1.0, clock=lambda: T0)
    yield src
    await src.close()


# --- the contract ---------------------------------------------------------------------------
async def test_reads_the_documented_answer(case: Case, exchange: FakeExchange,
                                           source: HttpRateSource) -> None:
    exchange.answer(200, case.ok)
    rate = await source.fetch("usd")
    assert rate == Rate("USD", 6_701_235, case.cls.name, T0)
    assert exchange.count == 1
    assert str(exchange.requests[0].url) == case.url
    assert exchange.requests[0].method == "GET"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_server_trouble_is_unreachable(exchange: FakeExchange, source: HttpRateSource,
                                             status: int) -> None:
    exchange.answer(status, "<html>Bad gateway</html>")
    with pytest.raises(SourceUnreachable, match=f"HTTP {status}"):
        await source.fetch("USD")


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"), httpx.ConnectError("refused"),
     httpx.RemoteProtocolError("peer closed")],
    ids=lambda e: type(e).__name__,
)
async def test_transport_errors_are_unreachable(exchange: FakeExchange, source: HttpRateSource,
                                                exc: httpx.HTTPError) -> None:
    exchange.fail(exc)
    with pytest.raises(SourceUnreachable) as info:
        await source.fetch("USD")
    assert info.value.__cause__ is exc  # raise … from exc


@pytest.mark.parametrize(
    "body",
    [b"<html>maintenance</html>", b"", b"[]", b"null", b'{"unexpected": true}',
     b'{"bitcoin": NaN}'],
)
async def test_unreadable_answers_are_bad_responses(exchange: FakeExchange,
                                                    source: HttpRateSource, body: bytes) -> None:
    exchange.answer(200, body)
    with pytest.raises(BadRateResponse):
        await source.fetch("USD")


async def test_an_answer_without_the_price_is_bad(case: Case, exchange: FakeExchange,
                                                  source: HttpRateSource) -> None:
    exchange.answer(200, case.no_price)
    with pytest.raises(BadRateResponse, match="no "):
        await source.fetch("USD")


@pytest.mark.parametrize("price", ["0", "-67012.35", "abc"])
async def test_a_price_that_is_not_positive_is_bad(case: Case, exchange: FakeExchange,
                                                   source: HttpRateSource, price: str) -> None:
    exchange.answer(200, _with_price(case, price))
    with pytest.raises(BadRateResponse):
        await source.fetch("USD")


async def test_unquoted_currency_is_unsupported(case: Case, exchange: FakeExchange,
                                                source: HttpRateSource) -> None:
    exchange.answer(*case.unsupported)
    with pytest.raises(UnsupportedCurrency):
        await source.fetch("ISK")


async def test_unknown_currency_never_reaches_the_exchange(exchange: FakeExchange,
                                                           source: HttpRateSource) -> None:
    with pytest.raises(UnsupportedCurrency):
        await source.fetch("XYZ")
    assert exchange.count == 0


async def test_other_client_errors_are_bad_responses(exchange: FakeExchange,
                                                     source: HttpRateSource) -> None:
    exchange.answer(403, {"message": "forbidden"})
    with pytest.raises(BadRateResponse, match="HTTP 403"):
        await source.fetch("USD")


async def test_base_url_is_overridable(case: Case, exchange: FakeExchange) -> None:
    exchange.answer(200, case.ok)
    src = case.cls(base_url="http://127.0.0.1:9/prefix/", transport=exchange.transport())
    try:
        await src.fetch("USD")
    finally:
        await src.close()
    assert str(exchange.requests[0].url).startswith("http://127.0.0.1:9/prefix/")


async def test_a_shared_client_is_used_and_left_open(case: Case, exchange: FakeExchange) -> None:
    exchange.answer(200, case.ok)
    async with httpx.AsyncClient(transport=exchange.transport()) as client:
        src = case.cls(client=client)
        assert (await src.fetch("USD")).minor_per_btc == 6_701_235
        await src.close()
        assert not client.is_closed


def test_constructor_checks(case: Case) -> None:
    with pytest.raises(ValueError, match="base_url"):
        case.cls(base_url="ftp://example.com")
    with pytest.raises(ValueError, match="not both"):
        case.cls(client=httpx.AsyncClient(), transport=httpx.MockTransport(lambda r: r))


def _with_price(case: Case, price: str) -> Any:
    if case.cls is KrakenSource:
        return {"error": [], "result": {"XXBTZUSD": {"c": [price, "0.1"]}}}
    if case.cls is CoinbaseSource:
        return {"data": {"amount": price, "base": "BTC", "currency": "USD"}}
    if case.cls is BitstampSource:
        return {"last": price}
    return f'{{"bitcoin": {{"usd": "{price}"}}}}'.encode()


# --- per exchange ---------------------------------------------------------------------------
def _source(cls: Callable[..., HttpRateSource], exchange: FakeExchange) -> HttpRateSource:
    return cls(transport=exchange.transport(), clock=lambda: T0)


@pytest.mark.parametrize(
    ("currency", "pair", "key", "price", "minor"),
    [
        ("EUR", "XBTEUR", "XXBTZEUR", "61234.5", 6_123_450),  # legacy X/Z-prefixed name
        ("JPY", "XBTJPY", "XXBTZJPY", "9500000", 9_500_000),  # scale 0
        ("CHF", "XBTCHF", "XBTCHF", "57000.1", 5_700_010),  # newer pairs are unprefixed
    ],
)
async def test_kraken_pair_names(currency: str, pair: str, key: str, price: str,
                                 minor: int) -> None:
    exchange = FakeExchange()
    exchange.answer(200, {"error": [], "result": {key: {"c": [price, "0.01"]}}})
    rate = await _source(KrakenSource, exchange).fetch(currency)
    assert exchange.requests[0].url.params["pair"] == pair
    assert (rate.currency, rate.minor_per_btc) == (currency, minor)


@pytest.mark.parametrize(
    "body",
    [
        {"error": [], "result": {"XXBTZUSD": {"c": "67012.35"}}},  # not indexed as "6"
        {"error": "EService:Unavailable"},
        {"error": [], "result": []},
    ],
)
async def test_kraken_malformed(body: Any) -> None:
    exchange = FakeExchange()
    exchange.answer(200, body)
    with pytest.raises(BadRateResponse):
        await _source(KrakenSource, exchange).fetch("USD")


async def test_kraken_answer_for_another_pair_is_bad() -> None:
    exchange = FakeExchange()
    exchange.answer(200, {"error": [], "result": {"XETHZUSD": {"c": ["3000", "1"]}}})
    with pytest.raises(BadRateResponse, match="XETHZUSD"):
        await _source(KrakenSource, exchange).fetch("USD")


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        (["EService:Unavailable"], SourceUnreachable),
        (["EService:Busy"], SourceUnreachable),
        (["EAPI:Rate limit exceeded"], SourceUnreachable),
        (["EGeneral:Internal error"], BadRateResponse),
        (["EQuery:Unknown asset pair"], UnsupportedCurrency),
    ],
)
async def test_kraken_error_array(errors: list[str], expected: type[Exception]) -> None:
    exchange = FakeExchange()
    exchange.answer(200, {"error": errors})
    with pytest.raises(expected, match=errors[0]):
        await _source(KrakenSource, exchange).fetch("USD")


async def test_coinbase_refuses_an_answer_for_another_currency() -> None:
    exchange = FakeExchange()
    exchange.answer(200, {"data": {"amount": "61234.50", "base": "BTC", "currency": "EUR"}})
    with pytest.raises(BadRateResponse, match="currency='EUR'"):
        await _source(CoinbaseSource, exchange).fetch("USD")


async def test_coinbase_400_names_the_currency_unsupported() -> None:
    exchange = FakeExchange()
    exchange.answer(400, {"errors": [{"id": "invalid_request", "message": "Invalid currency"}]})
    with pytest.raises(UnsupportedCurrency, match="Invalid currency"):
        await _source(CoinbaseSource, exchange).fetch("ISK")


async def test_bitstamp_uses_lower_case_pairs() -> None:
    exchange = FakeExchange()
    exchange.answer(200, {**BITSTAMP_USD, "last": "61234.5"})
    rate = await _source(BitstampSource, exchange).fetch("EUR")
    assert exchange.requests[0].url.path == "/api/v2/ticker/btceur/"
    assert rate.minor_per_btc == 6_123_450


async def test_coingecko_number_is_read_as_decimal_and_key_sent() -> None:
    exchange = FakeExchange()
    # Parsed as a float this is 25123.45650000000023…, which rounds to 25_123_457 fils.
    exchange.answer(200, b'{"bitcoin":{"bhd":25123.4565}}')
    src = CoinGeckoSource(transport=exchange.transport(), api_key="demo-key", clock=lambda: T0)
    rate = await src.fetch("BHD")
    assert rate.minor_per_btc == 25_123_456  # HALF_EVEN on the exact decimal
    assert exchange.requests[0].headers["x-cg-demo-api-key"] == "demo-key"
    assert exchange.requests[0].url.params["vs_currencies"] == "bhd"


# --- real sockets: timeouts and refused connections -----------------------------------------
@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_silent_server_times_out(case: Case, silent_server: str) -> None:
    src = case.cls(base_url=silent_server, timeout=0.1)
    try:
        with pytest.raises(SourceUnreachable, match=r"no answer within 0.1s") as info:
            await src.fetch("USD")
    finally:
        await src.close()
    assert isinstance(info.value.__cause__, httpx.TimeoutException)


async def test_a_refused_connection_is_unreachable(case: Case) -> None:
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = case.cls(base_url=f"http://127.0.0.1:{port}", timeout=1.0)
    try:
        with pytest.raises(SourceUnreachable, match="ConnectError"):
            await src.fetch("USD")
    finally:
        await src.close()


# --- the fixed source -----------------------------------------------------------------------
async def test_fixed_source() -> None:
    from decimal import Decimal

    src = FixedRateSource({"USD": Decimal("60000.00"), "jpy": 9_500_000, "BHD": "25000.125"},
                          clock=lambda: T0)
    assert await src.fetch("usd") == Rate("USD", 6_000_000, "fixed", T0)
    assert (await src.fetch("JPY")).minor_per_btc == 9_500_000
    assert (await src.fetch("BHD")).minor_per_btc == 25_000_125
    assert src.currencies == {"USD", "JPY", "BHD"}
    with pytest.raises(UnsupportedCurrency):
        await src.fetch("EUR")
    await src.close()


@pytest.mark.parametrize("prices", [{"USD": "abc"}, {"USD": "0"}, {"XYZ": "1"}])
def test_fixed_source_checks_prices_at_startup(prices: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="fixed rate"):
        FixedRateSource(prices)


def test_fixed_source_refuses_floats() -> None:
    with pytest.raises(TypeError):
        FixedRateSource({"USD": 60000.0})  # type: ignore[dict-item]
