"""Fiat rates for merchant invoices: BTC prices from exchanges behind one ``RateSource``
Protocol, a ``RateService`` that caches them with fallbacks, and the integer money maths that
locks a fiat amount to msat at invoice creation.

An invoice in fiat does::

    market = await rates.rate("USD")             # RateUnavailable/RateRefused → no invoice
    charged = apply_spread(market, store.spread_bp)
    amount_msat = fiat_to_msat(amount_cents, charged)   # rounded up, for the merchant
    # store charged.minor_per_btc, .currency, .source, .fetched_at, .spread_bp with the invoice
"""

from satvault.rates.base import (
    CURRENCY_SCALES,
    Rate,
    RateSource,
    currency_scale,
    normalize_currency,
    rate_from_price,
)
from satvault.rates.bitstamp import BitstampSource
from satvault.rates.coinbase import CoinbaseSource
from satvault.rates.coingecko import CoinGeckoSource
from satvault.rates.convert import (
    MSAT_PER_BTC,
    apply_spread,
    fiat_to_msat,
    msat_to_fiat,
    sats_to_msat,
)
from satvault.rates.errors import (
    BadRateResponse,
    RateConflict,
    RateError,
    RateRefused,
    RateUnavailable,
    SourceUnreachable,
    UnsupportedCurrency,
)
from satvault.rates.fixed import FixedRateSource
from satvault.rates.kraken import KrakenSource
from satvault.rates.service import SOURCE_NAMES, RateService, build_rate_service

__all__ = [
    "CURRENCY_SCALES",
    "MSAT_PER_BTC",
    "SOURCE_NAMES",
    "BadRateResponse",
    "BitstampSource",
    "CoinGeckoSource",
    "CoinbaseSource",
    "FixedRateSource",
    "KrakenSource",
    "Rate",
    "RateConflict",
    "RateError",
    "RateRefused",
    "RateService",
    "RateSource",
    "RateUnavailable",
    "SourceUnreachable",
    "UnsupportedCurrency",
    "apply_spread",
    "build_rate_service",
    "currency_scale",
    "fiat_to_msat",
    "msat_to_fiat",
    "normalize_currency",
    "rate_from_price",
    "sats_to_msat",
]
