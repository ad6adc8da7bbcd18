"""Coinbase's spot price: ``GET /v2/prices/BTC-USD/spot``.

The answer is ``{"data": {"amount": "67010.25", "base": "BTC", "currency": "USD"}}``, the
amount as decimal text. An unknown currency answers a 4xx with ``{"errors": [{"id":
"not_found" | "invalid_request", "message": …}]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from satvault.rates._http import HttpRateSource, dig
from satvault.rates.base import load_json
from satvault.rates.errors import BadRateResponse, RateError, UnsupportedCurrency

__all__ = ["CoinbaseSource"]


class CoinbaseSource(HttpRateSource):
    name = "coinbase"
    default_base_url = "https://api.coinbase.com"

    def _request(self, code: str) -> tuple[str, Mapping[str, str]]:
        return f"/v2/prices/BTC-{code}/spot", {}

    def _price(self, payload: Any, code: str) -> object:
        data = dig(payload, "data")
        # Guard against a proxy or an API change answering for another pair.
        for key, want in (("base", "BTC"), ("currency", code)):
            got = data.get(key, want) if isinstance(data, dict) else want
            if got != want:
                raise BadRateResponse(f"coinbase answered {key}={got!r}, asked for {want}")
        return dig(data, "amount")

    def _status_error(self, response: httpx.Response, code: str) -> RateError:
        if response.status_code in (400, 404):
            try:
                message = str(dig(load_json(response.content), "errors", 0, "message"))
            except RateError:
                message = f"HTTP {response.status_code}"
            return UnsupportedCurrency(f"coinbase has no BTC-{code} price ({message})")
        return super()._status_error(response, code)
