from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from satvault.rates import (
    BadRateResponse,
    CoinbaseSource,
    FixedRateSource,
    KrakenSource,
    Rate,
    RateSource,
    UnsupportedCurrency,
    currency_scale,
    normalize_currency,
    rate_from_price,
)
from satvault.rates.base import load_json, parse_price
from tests.rates.fakes import T0


@pytest.mark.parametrize(
    ("code", "scale"),
    [("USD", 2), ("eur", 2), ("JPY", 0), ("KRW", 0), ("CLP", 0), ("ISK", 0),
     ("BHD", 3), ("KWD", 3), ("JOD", 3), ("OMR", 3), ("TND", 3)],
)
def test_currency_scale(code: str, scale: int) -> None:
    assert currency_scale(code) == scale


@pytest.mark.parametrize("code", ["XYZ", "", "US", "BTC", "usdt"])
def test_unknown_currency_is_refused(code: str) -> None:
    with pytest.raises(UnsupportedCurrency):
        normalize_currency(code)


@pytest.mark.parametrize(
    ("currency", "price", "minor"),
    [
        ("USD", "60000.00", 6_000_000),
        ("USD", "60000.125", 6_000_012),  # a tie goes to the even cent
        ("USD", "60000.135", 6_000_014),
        ("USD", "60000.1250001", 6_000_013),  # not a tie: nearest
        ("USD", 60000, 6_000_000),
        ("USD", Decimal("67012.355"), 6_701_236),
        ("JPY", "9500000.5", 9_500_000),  # scale 0: whole yen, tie to even
        ("JPY", "9500001.5", 9_500_002),
        ("BHD", "25123.4565", 25_123_456),  # scale 3: fils
        ("BHD", "25123.4575", 25_123_458),
    ],
)
def test_rate_from_price_rounds_half_even(currency: str, price: object, minor: int) -> None:
    rate = rate_from_price(currency, price, source="test", fetched_at=T0)
    assert rate == Rate(currency, minor, "test", T0)


def test_major_per_btc_is_exact() -> None:
    assert Rate("USD", 6_701_235, "t", T0).major_per_btc == Decimal("67012.35")
    assert Rate("JPY", 9_500_000, "t", T0).major_per_btc == Decimal("9500000")
    assert Rate("BHD", 25_123_456, "t", T0).major_per_btc == Decimal("25123.456")


@pytest.mark.parametrize("value", ["0", "-1", "abc", "", "NaN", "Infinity", None, [], True,
                                   {"x": 1}])
def test_bad_prices_are_bad_responses(value: object) -> None:
    with pytest.raises(BadRateResponse):
        parse_price(value)


def test_a_float_price_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="parse_float=Decimal"):
        parse_price(67012.35)


def test_price_rounding_to_zero_is_refused() -> None:
    with pytest.raises(BadRateResponse, match="rounds to zero"):
        rate_from_price("USD", "0.004", source="t", fetched_at=T0)


def test_absurd_price_is_refused() -> None:
    with pytest.raises(BadRateResponse, match="out of range"):
        rate_from_price("USD", "1e40", source="t", fetched_at=T0)


def test_json_numbers_are_decimals_never_floats() -> None:
    payload = load_json(b'{"bitcoin": {"usd": 67012.355, "jpy": 9500000}}')
    assert payload["bitcoin"]["usd"] == Decimal("67012.355")
    assert isinstance(payload["bitcoin"]["usd"], Decimal)
    assert payload["bitcoin"]["jpy"] == 9_500_000


# The last: nested past the parser's recursion limit (found from outside in LNURL answers; a
# RecursionError is no ValueError and escaped as a crash).
@pytest.mark.parametrize("text", [b"NaN", b'{"p": Infinity}', b"<html>502</html>", b"\xff",
                                  b"[" * 100_000 + b"]" * 100_000])
def test_load_json_refuses_non_json(text: bytes) -> None:
    with pytest.raises(BadRateResponse):
        load_json(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"currency": "usd"},
        {"currency": "XYZ"},
        {"minor_per_btc": 0},
        {"minor_per_btc": -5},
        {"fetched_at": datetime(2026, 1, 1)},  # naive
        {"spread_bp": 10_000},
    ],
)
def test_rate_validates(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"currency": "USD", "minor_per_btc": 1, "source": "t",
                                 "fetched_at": T0, **kwargs}
    with pytest.raises(ValueError):
        Rate(**fields)  # type: ignore[arg-type]


def test_rate_is_frozen() -> None:
    rate = Rate("USD", 1, "t", T0)
    with pytest.raises(AttributeError):
        rate.minor_per_btc = 2  # type: ignore[misc]


async def test_sources_satisfy_the_protocol() -> None:
    for source in (KrakenSource(), CoinbaseSource(), FixedRateSource({"USD": "1"})):
        assert isinstance(source, RateSource)
        await source.close()
