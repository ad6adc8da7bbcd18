"""Fakes for the rate tests: an exchange behind ``httpx.MockTransport`` that counts requests,
realistic payloads copied from each exchange's documented answer, a scripted in-memory
``RateSource`` and a clock that only moves when told."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from satvault.rates import Rate, RateError, rate_from_price

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# --- payloads, as the exchanges document them (BTC/USD) --------------------------------------
KRAKEN_USD = {
    "error": [],
    "result": {
        "XXBTZUSD": {
            "a": ["67012.40000", "1", "1.000"],
            "b": ["67012.30000", "2", "2.000"],
            "c": ["67012.35000", "0.00150000"],
            "v": ["1234.56789012", "2345.67890123"],
            "p": ["66890.12345", "66750.54321"],
            "t": [23456, 45678],
            "l": ["66100.00000", "65900.10000"],
            "h": ["67400.00000", "67550.00000"],
            "o": "66500.00000",
        }
    },
}
KRAKEN_UNKNOWN_PAIR = {"error": ["EQuery:Unknown asset pair"]}
COINBASE_USD = {"data": {"amount": "67012.35", "base": "BTC", "currency": "USD"}}
COINBASE_NOT_FOUND = {"errors": [{"id": "not_found", "message": "Invalid currency"}]}
BITSTAMP_USD = {
    "timestamp": "1767323045", "open": "66500", "high": "67400", "low": "66100",
    "last": "67012.35", "volume": "1234.56789012", "vwap": "66890", "bid": "67012.30",
    "ask": "67012.40", "side": "0", "open_24": "66400", "percent_change_24": "0.92",
}
# CoinGecko sends the price as a JSON number: written as text here so no float is involved.
COINGECKO_USD = b'{"bitcoin":{"usd":67012.35}}'
COINGECKO_UNQUOTED: dict[str, dict[str, str]] = {"bitcoin": {}}


Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def reply(status: int = 200, body: Any = None) -> httpx.Response:
    """A response with a JSON body (dict/list), raw bytes or text, or nothing."""
    if isinstance(body, bytes | str):
        return httpx.Response(status, content=body)
    if body is None:
        return httpx.Response(status)
    return httpx.Response(status, content=json.dumps(body).encode(),
                          headers={"content-type": "application/json"})


@dataclass
class FakeExchange:
    """Answers every request with ``handler``; remembers each request."""

    handler: Handler = field(default=lambda _request: reply(200, {}))
    requests: list[httpx.Request] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.requests)

    def answer(self, status: int = 200, body: Any = None) -> None:
        self.handler = lambda _request: reply(status, body)

    def fail(self, exc: Exception) -> None:
        def raise_it(_request: httpx.Request) -> httpx.Response:
            raise exc

        self.handler = raise_it

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        result = self.handler(request)
        if not isinstance(result, httpx.Response):
            result = await result
        return result

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)


class FakeClock:
    """Monotonic seconds for the TTL, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedSource:
    """A RateSource whose answers are given in the test: a price, a RateError to raise, or a
    coroutine function to await (to hold a fetch open). Each fetch stamps a later time."""

    def __init__(self, name: str, *answers: str | RateError | Callable[[], Awaitable[None]]
                 ) -> None:
        self.name = name
        self.answers = list(answers) or ["60000.00"]
        self.calls = 0
        self.closed = False

    async def fetch(self, currency: str) -> Rate:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        fetched_at = T0 + timedelta(seconds=self.calls)
        if isinstance(answer, RateError):
            raise answer
        if callable(answer):
            await answer()
            answer = "60000.00"
        return rate_from_price(currency, answer, source=self.name, fetched_at=fetched_at)

    async def close(self) -> None:
        self.closed = True


async def forever() -> None:
    await asyncio.Event().wait()
