"""The one decimal-amount parser: exact, bounded, and strict about what it reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from satvault.amounts import MAX_INTEGER_DIGITS, InvalidAmount, parse_decimal


@given(st.integers(0, 10**MAX_INTEGER_DIGITS - 1), st.integers(0, 11), st.data())
def test_every_written_amount_reads_back_exactly(whole, places, data):
    decimals = data.draw(st.integers(0, places))
    frac = data.draw(st.integers(0, 10**decimals - 1)) if decimals else 0
    text = f"{whole}.{frac:0{decimals}d}" if decimals else str(whole)
    assert parse_decimal(text, places=places) == whole * 10**places + frac * 10**(
        places - decimals)


@pytest.mark.parametrize("text", ["1E+999980", "1e-3", ".001", "1.", "١٢", "\uff11\uff12",
                                  "1_000", "1,000", " 1", "1 ", "+1", "-1", "0x10", "NaN",
                                  "inf", "", "1.2.3", "9" * (MAX_INTEGER_DIGITS + 1), "1.001"])
def test_refused(text):
    with pytest.raises(InvalidAmount):
        parse_decimal(text, places=2)


def test_not_text():
    for value in (12, 1.5, None, b"12"):
        with pytest.raises(InvalidAmount):
            parse_decimal(value, places=2)
