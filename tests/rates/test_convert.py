from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from satvault.rates import (
    MSAT_PER_BTC,
    Rate,
    apply_spread,
    fiat_to_msat,
    msat_to_fiat,
    sats_to_msat,
)
from tests.rates.fakes import T0

USD_60K = Rate("USD", 6_000_000, "kraken", T0)  # 60,000.00 USD per BTC


def test_msat_per_btc() -> None:
    assert MSAT_PER_BTC == 100_000_000_000


def test_fiat_to_msat_rounds_up() -> None:
    # 10.00 USD = 1/6000 BTC = 16,666,666.67 msat → 16,666,667 (never less than asked)
    assert fiat_to_msat(1_000, USD_60K) == 16_666_667
    assert msat_to_fiat(16_666_667, USD_60K) == 1_000
    assert msat_to_fiat(16_666_666, USD_60K) == 999  # one msat less is short of 10.00 USD


def test_exact_amounts_are_not_rounded() -> None:
    assert fiat_to_msat(600, USD_60K) == 10_000_000  # 6.00 USD = 10,000 sat exactly
    assert fiat_to_msat(0, USD_60K) == 0


def test_msat_to_fiat_rounds_down() -> None:
    assert msat_to_fiat(16_666_666, USD_60K) == 999  # 9.9999996 USD shows as 9.99
    assert msat_to_fiat(MSAT_PER_BTC, USD_60K) == 6_000_000
    assert msat_to_fiat(1, USD_60K) == 0


def test_jpy_scale_zero() -> None:
    jpy = Rate("JPY", 9_500_000, "fixed", T0)  # 9,500,000 yen per BTC
    # 1,000 yen = 1000/9.5e6 BTC = 10,526,315.79 msat → 10,526,316
    assert fiat_to_msat(1_000, jpy) == 10_526_316
    assert msat_to_fiat(10_526_316, jpy) == 1_000
    assert msat_to_fiat(10_526_315, jpy) == 999


def test_bhd_scale_three() -> None:
    bhd = Rate("BHD", 25_123_456, "fixed", T0)  # 25,123.456 BHD per BTC
    # 12.345 BHD = 12345 fils → ceil(12345e11 / 25123456) = ceil(49,137,347.98…) = 49,137,348
    assert fiat_to_msat(12_345, bhd) == math.ceil(Fraction(12_345 * 10**11, 25_123_456))
    assert fiat_to_msat(12_345, bhd) == 49_137_348
    assert msat_to_fiat(49_137_348, bhd) == 12_345


def test_sats_to_msat_is_exact() -> None:
    assert sats_to_msat(21) == 21_000
    assert sats_to_msat(0) == 0


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError):
        fiat_to_msat(-1, USD_60K)
    with pytest.raises(ValueError):
        msat_to_fiat(-1, USD_60K)


amounts = st.integers(min_value=0, max_value=10**14)  # up to a trillion dollars in cents
rates = st.builds(
    Rate,
    currency=st.sampled_from(["USD", "JPY", "BHD", "EUR", "KRW", "KWD"]),
    minor_per_btc=st.integers(min_value=1, max_value=10**15),
    source=st.just("h"),
    fetched_at=st.just(T0),
)


@given(amounts, rates)
def test_round_trip_never_loses_fiat(amount: int, rate: Rate) -> None:
    msat = fiat_to_msat(amount, rate)
    assert msat_to_fiat(msat, rate) >= amount
    # …and it is the least such amount: one msat fewer falls short.
    if msat > 0:
        assert msat_to_fiat(msat - 1, rate) < amount
    # the same as exact rational arithmetic rounded up
    assert msat == math.ceil(Fraction(amount * MSAT_PER_BTC, rate.minor_per_btc))


@given(st.integers(min_value=0, max_value=10**18), rates)
def test_msat_to_fiat_is_the_floor(msat: int, rate: Rate) -> None:
    assert msat_to_fiat(msat, rate) == math.floor(Fraction(msat * rate.minor_per_btc,
                                                           MSAT_PER_BTC))


# --- spread -----------------------------------------------------------------------------------
def test_spread_lowers_the_charged_rate_so_the_payer_pays_more_sats() -> None:
    charged = apply_spread(USD_60K, 100)  # 1 %
    assert charged.minor_per_btc == 5_940_000  # 59,400.00 USD per BTC
    assert charged.spread_bp == 100
    assert (charged.source, charged.fetched_at, charged.currency) == ("kraken", T0, "USD")
    assert fiat_to_msat(1_000, charged) > fiat_to_msat(1_000, USD_60K)
    assert fiat_to_msat(1_000, charged) == 16_835_017  # ceil(1e14 / 5.94e6)
    # Valued at the market, what the payer sends is worth more than the invoice: the margin.
    assert msat_to_fiat(fiat_to_msat(1_000, charged), USD_60K) == 1_010


def test_spread_rounds_the_rate_down() -> None:
    rate = Rate("USD", 6_000_099, "kraken", T0)
    # 6,000,099 * 0.99 = 5,940,098.01 → 5,940,098 (lower rate: more sats for the merchant)
    assert apply_spread(rate, 100).minor_per_btc == 5_940_098


def test_zero_spread_is_the_market_rate() -> None:
    assert apply_spread(USD_60K, 0) is USD_60K


@given(st.integers(min_value=0, max_value=9_999), amounts,
       st.integers(min_value=10_000, max_value=10**12))
def test_spread_never_makes_an_invoice_cheaper(bp: int, amount: int, minor: int) -> None:
    market = Rate("USD", minor, "h", T0)
    assert fiat_to_msat(amount, apply_spread(market, bp)) >= fiat_to_msat(amount, market)


@pytest.mark.parametrize("bp", [-1, 10_000, 20_000])
def test_spread_out_of_range(bp: int) -> None:
    with pytest.raises(ValueError):
        apply_spread(USD_60K, bp)


def test_spread_is_applied_once() -> None:
    with pytest.raises(ValueError, match="already"):
        apply_spread(apply_spread(USD_60K, 50), 50)


def test_spread_that_leaves_no_rate() -> None:
    with pytest.raises(ValueError, match="leaves no rate"):
        apply_spread(Rate("JPY", 1, "h", T0), 1)
