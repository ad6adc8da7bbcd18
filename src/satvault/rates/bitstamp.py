"""Bitstamp's ticker: ``GET /api/v2/ticker/btcusd/``.

The answer is flat, every number as text: ``{"timestamp": "1717000000", "open": "…", "high":
"…", "low": "…", "last": "67010", "volume": "…", "vwap": "…", "bid": "…", "ask": "…", …}``;
``last`` is the last trade. Bitstamp lists few fiat pairs (USD, EUR, GBP); any other answers
HTTP 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from satvault.rates._http import HttpRateSource, dig
from satvault.rates.errors import RateError, UnsupportedCurrency

__all__ = ["BitstampSource"]


class BitstampSource(HttpRateSource):
    name = "bitstamp"
    default_base_url = "https://www.bitstamp.net"

    def _request(self, code: str) -> tuple[str, Mapping[str, str]]:
        return f"/api/v2/ticker/btc{code.lower()}/", {}

    def _price(self, payload: Any, code: str) -> object:
        return dig(payload, "last")

    def _status_error(self, response: httpx.Response, code: str) -> RateError:
        if response.status_code == 404:
            return UnsupportedCurrency(f"bitstamp has no btc{code.lower()} pair (HTTP 404)")
        return super()._status_error(response, code)
