"""Decimal amounts written as text ("12.50", "0.0015"), read into integers of a smallest unit.

This is the one parser for every amount a client writes as a decimal: store invoice amounts
(BTC, SATS, fiat), BIP21 ``amount=`` and anything added later. It reads the text with a
regular expression and integer arithmetic on bounded digit strings, never ``Decimal`` or
``float``, so no input can ask for a huge exponent, a rounding or a slow conversion.

The grammar is the one BIP21 writes and the strictest useful one: ASCII digits, optionally a
``.`` followed by at least one more digit (``12``, ``12.5``, ``0.001``). Refused: signs,
exponents (``1e-3``), a leading or trailing dot (``.001``, ``12.``), digit separators
(``1_000``, ``1,000``), surrounding spaces, non-ASCII digits (``١٢``, full-width digits), and
more decimal places than the unit has (``12.001`` USD; even ``12.010``: trailing zeros are
decimal places too). The integer part is limited to :data:`MAX_INTEGER_DIGITS` digits,
far beyond any real amount and far below anything costly.

It imports nothing of ours; callers turn :class:`InvalidAmount` into their domain's error.
"""

from __future__ import annotations

import re

__all__ = ["MAX_INTEGER_DIGITS", "InvalidAmount", "parse_decimal", "parse_whole_sats"]

MAX_INTEGER_DIGITS = 18
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?", re.ASCII)
# A person's whole number in a form: digits, or groups of three after the first behind one
# separator used throughout ("1,000,000", "1 000 000", "1_000").
# A first group never starts with 0: "0,500" can only mean a half (found from outside).
_GROUPED = re.compile(r"[0-9]+|[1-9][0-9]{0,2}(?:,[0-9]{3})+|[1-9][0-9]{0,2}(?: [0-9]{3})+"
                      r"|[1-9][0-9]{0,2}(?:_[0-9]{3})+", re.ASCII)


class InvalidAmount(ValueError):
    """The text is not a decimal amount this parser accepts; the message says why."""


def parse_decimal(text: object, *, places: int) -> int:
    """``text`` as an integer count of ``10**-places`` units: ``parse_decimal("12.5",
    places=2) == 1250``. Exact: more than ``places`` decimals is refused, never rounded.
    Zero is returned as 0; whether it is allowed is the caller's rule."""
    if not isinstance(text, str):
        raise InvalidAmount("an amount is a decimal string such as \"12.50\"")
    if len(text) > MAX_INTEGER_DIGITS + 1 + places:
        raise InvalidAmount(f"an amount has at most {MAX_INTEGER_DIGITS} integer digits and "
                            f"{places} decimal places")
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise InvalidAmount(f"{text!r} is not a decimal amount (ASCII digits with an optional "
                            f"'.' and decimals, no sign, exponent, separators or spaces)")
    whole, frac = match.group(1), match.group(2) or ""
    if len(whole) > MAX_INTEGER_DIGITS:
        raise InvalidAmount(f"an amount has at most {MAX_INTEGER_DIGITS} integer digits")
    if len(frac) > places:
        raise InvalidAmount(f"{text!r} has more than {places} decimal places"
                            if places else f"{text!r} must be a whole number")
    return int(whole + frac.ljust(places, "0"))


def parse_whole_sats(text: str) -> int:
    """A whole number of sats as a person types it in a form, separators of thousands
    allowed: "1,000", "1 000", "1_000". A separator anywhere else is refused, never dropped
    (found from outside: the withdrawal form read "0,5" as 5 sats and "1,5" as 15)."""
    text = text.strip()
    if len(text) > 2 * MAX_INTEGER_DIGITS or _GROUPED.fullmatch(text) is None:
        raise InvalidAmount(f"{text!r} is not a whole number of sats")
    digits = re.sub(r"[, _]", "", text)
    if len(digits) > 16:
        raise InvalidAmount("an amount has at most 16 digits of sats")
    return int(digits)
