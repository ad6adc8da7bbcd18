"""A source that always answers the same prices: for offline use, the demo and tests.

``FixedRateSource({"USD": Decimal("60000.00"), "JPY": 9_000_000})`` quotes those currencies
and no other. Prices are checked and rounded (HALF_EVEN, as for any source) when the source is
built, so a typo in the configuration fails at startup, not at the first invoice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from satvault.rates.base import Clock, Rate, normalize_currency, rate_from_price, utc_now
from satvault.rates.errors import RateError, UnsupportedCurrency

__all__ = ["FixedRateSource"]

_EPOCH = datetime.fromtimestamp(0, UTC)  # placeholder: fetch stamps its own clock


class FixedRateSource:
    name = "fixed"

    def __init__(self, prices: Mapping[str, Decimal | int | str], *, clock: Clock = utc_now
                 ) -> None:
        self._clock = clock
        self._minor: dict[str, int] = {}
        for code, price in prices.items():
            try:
                rate = rate_from_price(code, price, source=self.name, fetched_at=_EPOCH)
            except RateError as exc:
                raise ValueError(f"fixed rate for {code!r}: {exc}") from exc
            self._minor[rate.currency] = rate.minor_per_btc

    @property
    def currencies(self) -> frozenset[str]:
        return frozenset(self._minor)

    async def fetch(self, currency: str) -> Rate:
        code = normalize_currency(currency)
        if code not in self._minor:
            raise UnsupportedCurrency(f"no fixed rate for {code}")
        return Rate(code, self._minor[code], self.name, self._clock())

    async def close(self) -> None:
        return None
