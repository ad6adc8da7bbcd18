"""CoinGecko's simple price: ``GET /api/v3/simple/price?ids=bitcoin&vs_currencies=usd``.

The answer is ``{"bitcoin": {"usd": 67010.42}}`` with the price as a JSON *number* (parsed as
Decimal, never float). A currency CoinGecko does not quote is simply absent:
``{"bitcoin": {}}``. The keyless public API is rate-limited hard (HTTP 429, treated as
unreachable); a demo key, when given, goes in the ``x-cg-demo-api-key`` header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from satvault.rates._http import DEFAULT_HEADERS, DEFAULT_TIMEOUT, HttpRateSource, dig
from satvault.rates.base import Clock, utc_now
from satvault.rates.errors import UnsupportedCurrency

__all__ = ["CoinGeckoSource"]


class CoinGeckoSource(HttpRateSource):
    name = "coingecko"
    default_base_url = "https://api.coingecko.com"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(base_url=base_url, client=client, transport=transport, timeout=timeout,
                         clock=clock)
        self._api_key = api_key

    def _request(self, code: str) -> tuple[str, Mapping[str, str]]:
        return "/api/v3/simple/price", {"ids": "bitcoin", "vs_currencies": code.lower()}

    def _headers(self) -> Mapping[str, str]:
        if self._api_key:
            return {**DEFAULT_HEADERS, "x-cg-demo-api-key": self._api_key}
        return DEFAULT_HEADERS

    def _price(self, payload: Any, code: str) -> object:
        quotes = dig(payload, "bitcoin")
        if isinstance(quotes, dict) and code.lower() not in quotes:
            raise UnsupportedCurrency(f"coingecko does not quote bitcoin in {code}")
        return dig(quotes, code.lower())
