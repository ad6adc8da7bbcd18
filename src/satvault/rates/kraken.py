"""Kraken's public ticker: ``GET /0/public/Ticker?pair=XBTUSD``.

The answer is ``{"error": [], "result": {"XXBTZUSD": {"a": […], "b": […], "c": ["67010.10000",
"0.00150000"], …}}}``; ``c`` is the last trade closed as ``[price, lot volume]``. Kraken calls
bitcoin XBT, and answers under its own pair name, not the one asked for: the older fiat pairs
carry X/Z class prefixes (``XBTUSD`` → ``XXBTZUSD``, ``XBTEUR`` → ``XXBTZEUR``, also GBP, JPY,
CAD), newer ones do not (``XBTCHF`` → ``XBTCHF``). Errors come back as HTTP 200 with strings in
``error`` (``"EQuery:Unknown asset pair"``, ``"EService:Unavailable"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from satvault.rates._http import HttpRateSource, dig
from satvault.rates.errors import BadRateResponse, SourceUnreachable, UnsupportedCurrency

__all__ = ["KrakenSource"]

# Kraken's "come back later" errors: the next source should be tried, as for an HTTP 503.
_TRANSIENT = ("EService:", "EAPI:Rate limit", "EGeneral:Temporary lockout")


class KrakenSource(HttpRateSource):
    name = "kraken"
    default_base_url = "https://api.kraken.com"

    def _request(self, code: str) -> tuple[str, Mapping[str, str]]:
        return "/0/public/Ticker", {"pair": f"XBT{code}"}

    def _price(self, payload: Any, code: str) -> object:
        errors = dig(payload, "error")
        if not isinstance(errors, list):
            raise BadRateResponse("the error field is not a list")
        if errors:
            text = ", ".join(map(str, errors))
            if any(str(e).startswith("EQuery:Unknown asset pair") for e in errors):
                raise UnsupportedCurrency(f"kraken has no XBT{code} pair ({text})")
            if any(str(e).startswith(_TRANSIENT) for e in errors):
                raise SourceUnreachable(f"busy: {text}")
            raise BadRateResponse(f"error: {text}")
        result = dig(payload, "result")
        if not isinstance(result, dict):
            raise BadRateResponse("the result field is not an object")
        for pair in (f"XXBTZ{code}", f"XBT{code}"):
            if pair in result:
                return dig(result[pair], "c", 0)
        raise BadRateResponse(f"no XBT{code} ticker in the answer (got {sorted(result)})")
