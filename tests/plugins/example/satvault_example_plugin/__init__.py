"""One plug-in of each kind satvault loads through entry points (see pyproject.toml)."""

from __future__ import annotations

import json
import os
from typing import Any

from satvault.backends.bitcoind import BitcoindBackend
from satvault.backends.lnd import LndBackend
from satvault.kernel.clock import utcnow
from satvault.rates.base import Rate, rate_from_price
from satvault.rates.errors import UnsupportedCurrency

PRICE_USD = "54321.09"


class ExampleRates:
    """A rate source quoting one made-up USD price."""

    name = "example"

    def __init__(self, *, timeout: float, transport: Any = None) -> None:
        self.timeout = timeout

    async def fetch(self, currency: str) -> Rate:
        if currency.upper() != "USD":
            raise UnsupportedCurrency(f"the example source quotes USD only, not {currency}")
        return rate_from_price("USD", PRICE_USD, source=self.name, fetched_at=utcnow())

    async def close(self) -> None:
        return None


class ExampleChain(BitcoindBackend):
    """Bitcoin Core's JSON-RPC adapter, made by a plug-in (it only marks itself)."""

    made_by = "satvault-example-plugin"


def example_chain(settings: Any) -> ExampleChain:
    return ExampleChain(settings.bitcoind_url, cookie_file=settings.bitcoind_cookie_file)


class ExampleLightning(LndBackend):
    made_by = "satvault-example-plugin"


def example_lightning(settings: Any) -> ExampleLightning:
    return ExampleLightning(settings.lnd_url)


class _RoundAmount:
    """How many trailing zeros the amount has in satoshis (round amounts: 1,000,000 → 6)."""

    kind = "number"

    def __call__(self, event: Any, features: dict[str, Any]) -> int:
        sat = event.amount_msat // 1000
        zeros = 0
        while sat and sat % 10 == 0:
            sat //= 10
            zeros += 1
        return zeros


class _Raising:
    kind = "bool"

    def __call__(self, event: Any, features: dict[str, Any]) -> bool:
        raise RuntimeError("the example plug-in fails on purpose")


ROUND_AMOUNT = _RoundAmount()
RAISING = _Raising()


class JsonLinesNotifier:
    """Appends each alert as one JSON line to $SATVAULT_EXAMPLE_NOTIFY_FILE."""

    def __init__(self, settings: Any) -> None:
        self.path = os.environ["SATVAULT_EXAMPLE_NOTIFY_FILE"]

    async def notify(self, alert: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(alert, sort_keys=True) + "\n")
