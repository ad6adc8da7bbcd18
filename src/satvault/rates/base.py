"""A BTC price in a fiat currency, and the Protocol every rate source implements.

A ``Rate`` is the price of one whole bitcoin in the currency's *minor units* as an integer:
``Rate("USD", 6_000_000, …)`` is 60,000.00 USD per BTC, ``Rate("JPY", 9_500_000, …)`` is
9,500,000 yen per BTC (the yen has no minor unit). The scale comes from ISO 4217 (below);
a currency missing from the table is refused rather than guessed, since a wrong scale
misprices an invoice a hundredfold.

Prices arrive from sources as decimal text (or JSON numbers, parsed as ``Decimal``, never
``float``) and are rounded to the minor unit HALF_EVEN, once. That rounding moves the rate by
at most half a cent per bitcoin; the money-facing roundings, which do favour the merchant,
happen later in ``convert``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Protocol, runtime_checkable

from satvault.kernel import strictjson
from satvault.kernel.clock import utcnow
from satvault.rates.errors import BadRateResponse, UnsupportedCurrency

__all__ = [
    "CURRENCY_SCALES",
    "MAX_MINOR_PER_BTC",
    "Clock",
    "Rate",
    "RateSource",
    "currency_scale",
    "load_json",
    "normalize_currency",
    "parse_price",
    "rate_from_price",
    "utc_now",
]

Clock = Callable[[], datetime]

# ISO 4217 minor units. Most currencies have 2; add a currency here before invoicing in it.
_SCALE_0 = ("JPY", "KRW", "CLP", "ISK", "VND", "PYG", "UGX", "XAF", "XOF")
_SCALE_3 = ("BHD", "KWD", "JOD", "OMR", "TND", "IQD", "LYD")
_SCALE_2 = (
    "USD", "EUR", "GBP", "CHF", "CAD", "AUD", "NZD", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF",
    "RON", "BGN", "TRY", "UAH", "GEL", "ILS", "AED", "SAR", "QAR", "ZAR", "NGN", "KES", "GHS",
    "EGP", "MAD", "INR", "PKR", "BDT", "LKR", "CNY", "HKD", "SGD", "TWD", "THB", "MYR", "IDR",
    "PHP", "KZT", "MXN", "BRL", "ARS", "COP", "PEN",
)
CURRENCY_SCALES: dict[str, int] = {
    **dict.fromkeys(_SCALE_2, 2), **dict.fromkeys(_SCALE_0, 0), **dict.fromkeys(_SCALE_3, 3),
}


def utc_now() -> datetime:
    return utcnow()  # the process clock


def normalize_currency(code: str) -> str:
    """``"usd"`` → ``"USD"``; a code missing from the scale table raises UnsupportedCurrency."""
    norm = code.strip().upper()
    if norm not in CURRENCY_SCALES:
        raise UnsupportedCurrency(f"unsupported currency {code!r}: not in the ISO 4217 scale table")
    return norm


def currency_scale(code: str) -> int:
    """Minor units per major unit as a power of ten: USD 2, JPY 0, BHD 3."""
    return CURRENCY_SCALES[normalize_currency(code)]


# The most minor units a BTC may be priced at: found from outside, two sources agreeing on
# 1e20 CAD made an invoice a 500 (the rate overflowed its 64-bit column, 2^63 - 1 ~ 9.2e18)
# and crashed `satvault rates accept`. 10^15 is ~400,000 times the dearest price quoted in a
# currency without a minor unit today (~2.5e9 VND), far under the column, and keeps a fiat
# amount times the rate (msat_to_fiat) small.
MAX_MINOR_PER_BTC = 10**15


@dataclass(frozen=True, slots=True)
class Rate:
    """The price of 1 BTC in ``currency``'s minor units, who said so and when.

    ``spread_bp`` is 0 for a market rate; ``convert.apply_spread`` returns the rate a payer is
    charged, which records the spread it took off.
    """

    currency: str
    minor_per_btc: int
    source: str
    fetched_at: datetime
    spread_bp: int = 0

    def __post_init__(self) -> None:
        if self.currency not in CURRENCY_SCALES:
            raise ValueError(f"Rate.currency must be a known upper-case code: {self.currency!r}")
        if isinstance(self.minor_per_btc, bool) or not isinstance(self.minor_per_btc, int):
            raise TypeError("Rate.minor_per_btc must be an int")
        if self.minor_per_btc <= 0:
            raise ValueError(f"Rate.minor_per_btc must be positive, not {self.minor_per_btc}")
        if self.minor_per_btc > MAX_MINOR_PER_BTC:
            raise ValueError(f"Rate.minor_per_btc must be at most {MAX_MINOR_PER_BTC}, not "
                             f"{self.minor_per_btc}")
        if self.fetched_at.tzinfo is None:
            raise ValueError("Rate.fetched_at must be timezone-aware")
        if not 0 <= self.spread_bp < 10_000:
            raise ValueError(f"Rate.spread_bp must be in [0, 10000), not {self.spread_bp}")

    @property
    def scale(self) -> int:
        return CURRENCY_SCALES[self.currency]

    @property
    def major_per_btc(self) -> Decimal:
        """For display: ``Decimal("60000.00")`` (exact, no rounding)."""
        return Decimal(self.minor_per_btc).scaleb(-self.scale)


@runtime_checkable
class RateSource(Protocol):
    """Where BTC prices come from. ``fetch`` raises only ``RateError``s: UnsupportedCurrency
    when the source does not quote the currency, SourceUnreachable, BadRateResponse."""

    name: str

    async def fetch(self, currency: str) -> Rate: ...

    async def close(self) -> None: ...


def _no_constants(token: str) -> Any:
    raise ValueError(f"JSON constant {token} is not a price")


def load_json(content: bytes | str) -> Any:
    """Parse a JSON answer with every non-integer number as ``Decimal`` (never ``float``) and
    ``NaN``/``Infinity`` refused; a payload that is not JSON raises BadRateResponse."""
    try:
        return strictjson.foreign(content, parse_float=Decimal,
                                 parse_constant=_no_constants)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRateResponse(f"answer is not JSON: {exc}") from exc


def parse_price(value: object) -> Decimal:
    """A positive, finite price from a JSON value: decimal text, an int or a Decimal."""
    if isinstance(value, float):
        raise TypeError("a float price: parse JSON with parse_float=Decimal (see load_json)")
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise BadRateResponse(f"price is not a number: {value!r}")
    try:
        price = Decimal(value)
    except InvalidOperation as exc:
        raise BadRateResponse(f"price is not a number: {value!r}") from exc
    if not price.is_finite() or price <= 0:
        raise BadRateResponse(f"price is not a positive number: {value!r}")
    return price


def rate_from_price(currency: str, price: object, *, source: str, fetched_at: datetime) -> Rate:
    """A Rate from a price in major units per BTC (``"60000.125"`` USD), rounded to the minor
    unit HALF_EVEN (→ 6_000_012 cents): one rounding, straight from the exact decimal."""
    code = normalize_currency(currency)
    scale = CURRENCY_SCALES[code]
    exact = parse_price(price)
    try:
        # quantize rounds exactly once; the scaleb that follows only moves the exponent.
        minor = int(exact.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_EVEN)
                    .scaleb(scale))
    except InvalidOperation as exc:  # more digits than the context holds: not a real price
        raise BadRateResponse(f"price out of range: {price!r}") from exc
    if minor <= 0:
        raise BadRateResponse(f"price {price!r} rounds to zero {code} minor units")
    if minor > MAX_MINOR_PER_BTC:
        raise BadRateResponse(f"price out of range: {price!r} is above "
                              f"{MAX_MINOR_PER_BTC} {code} minor units per BTC")
    return Rate(code, minor, source, fetched_at)
