"""``RateService``: one rate per currency from an ordered list of sources, cached for a TTL.

The first source is the primary, the rest are fallbacks tried in order when one fails
(unreachable, a bad answer, no answer within ``source_timeout``, or no quote for that
currency). The rate returned says which source answered and when; a cached rate keeps its
original ``source`` and ``fetched_at``, so an invoice records where its rate really came from.

Concurrent callers asking for the same currency while it is being fetched share that one fetch
(no thundering herd on an exchange); a caller that is cancelled does not cancel it for the
others. Failures are not cached: the next call tries again. When every source fails the call
raises ``RateUnavailable`` naming each source and its reason (``UnsupportedCurrency`` if every
source said it does not quote the currency) and the invoice must not be created.

``build_rate_service("kraken,coinbase,fixed", {"USD": "60000"})`` builds one from a settings
string (names: kraken, coinbase, bitstamp, coingecko, fixed), failing at startup on a misspelt
name. The pure conversions (``apply_spread``, ``fiat_to_msat``, …) live in ``convert`` and are
re-exported here for convenience.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial

import httpx

from satvault.kernel.plugins import PluginError, load_plugin, plugin_names
from satvault.logs import get_logger
from satvault.rates._http import DEFAULT_TIMEOUT, HttpRateSource
from satvault.rates.base import Rate, RateSource, normalize_currency
from satvault.rates.bitstamp import BitstampSource
from satvault.rates.coinbase import CoinbaseSource
from satvault.rates.coingecko import CoinGeckoSource
from satvault.rates.convert import apply_spread, fiat_to_msat, msat_to_fiat, sats_to_msat
from satvault.rates.errors import RateError, RateUnavailable, UnsupportedCurrency
from satvault.rates.fixed import FixedRateSource
from satvault.rates.kraken import KrakenSource

__all__ = [
    "SOURCE_NAMES",
    "RateService",
    "apply_spread",
    "build_rate_service",
    "fiat_to_msat",
    "msat_to_fiat",
    "parse_source_names",
    "sats_to_msat",
]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Cached:
    rate: Rate
    expires_at: float  # on the service's monotonic clock


class RateService:
    def __init__(
        self,
        sources: Sequence[RateSource],
        *,
        ttl_seconds: float = 60.0,
        source_timeout: float | None = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` is monotonic seconds, for the TTL only (inject a fake one in tests).
        ``source_timeout`` bounds each source's whole fetch, on top of its HTTP timeouts, so a
        server that drips bytes cannot hold an invoice up. ``ttl_seconds=0`` disables caching
        (concurrent callers still share a fetch)."""
        if not sources:
            raise ValueError("RateService needs at least one rate source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"rate source names must be unique, got {names}")
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must not be negative")
        self._sources = tuple(sources)
        self._ttl = ttl_seconds
        self._source_timeout = source_timeout
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._inflight: dict[str, asyncio.Task[Rate]] = {}

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._sources)

    async def rate(self, currency: str) -> Rate:
        """The market rate for ``currency`` (no spread): cached if younger than the TTL."""
        code = normalize_currency(currency)
        cached = self._cache.get(code)
        if cached is not None and self._clock() < cached.expires_at:
            return cached.rate
        task = self._inflight.get(code)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(code), name=f"rate:{code}")
            self._inflight[code] = task
            task.add_done_callback(partial(self._settle, code))
        # shield: one waiter's cancellation must not cancel the fetch the others are awaiting.
        return await asyncio.shield(task)

    def _settle(self, code: str, task: asyncio.Task[Rate]) -> None:
        if self._inflight.get(code) is task:
            del self._inflight[code]
        if not task.cancelled():
            task.exception()  # mark retrieved even if every waiter was cancelled

    async def _fetch(self, code: str) -> Rate:
        failures: list[tuple[str, str]] = []
        unsupported = 0
        for source in self._sources:
            try:
                async with asyncio.timeout(self._source_timeout):
                    rate = await source.fetch(code)
            except TimeoutError:
                failures.append((source.name, f"no answer within {self._source_timeout}s"))
                continue
            except UnsupportedCurrency as exc:
                unsupported += 1
                failures.append((source.name, str(exc)))
                continue
            except RateError as exc:
                failures.append((source.name, str(exc)))
                continue
            except Exception as exc:
                # A source (a plug-in) breaking its contract fails like an unreachable one: the
                # next source is asked, and with none left the invoice is refused (503), not
                # answered with the plug-in's exception (found from outside: a 500, and the
                # configured fallbacks never asked).
                log.warning("rate_source_broke_contract", source=source.name, error=repr(exc))
                failures.append((source.name, f"{type(exc).__name__}: {exc}"))
                continue
            if not isinstance(rate, Rate):
                failures.append((source.name, f"answered {type(rate).__name__}, not a Rate"))
                continue
            if rate.currency != code or rate.spread_bp:
                failures.append((source.name, f"answered {rate.currency} (spread "
                                              f"{rate.spread_bp} bp) for {code}"))
                continue
            if failures:
                log.warning("rate_fallback", currency=code, source=source.name,
                            failures=dict(failures))
            self._cache[code] = _Cached(rate, self._clock() + self._ttl)
            return rate
        log.error("rate_unavailable", currency=code, failures=dict(failures))
        if unsupported == len(self._sources):
            raise UnsupportedCurrency(f"no rate source quotes {code} ("
                                      + "; ".join(f"{n}: {r}" for n, r in failures) + ")")
        raise RateUnavailable(code, failures)

    def forget(self, currency: str | None = None) -> None:
        """Drop the cached rate for one currency, or all of them."""
        if currency is None:
            self._cache.clear()
        else:
            self._cache.pop(normalize_currency(currency), None)

    async def close(self) -> None:
        """Cancel fetches in flight and close every source."""
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        results = await asyncio.gather(*(s.close() for s in self._sources),
                                       return_exceptions=True)
        for source, result in zip(self._sources, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("rate_source_close_failed", source=source.name, error=repr(result))


# --- chosen by a settings string ---------------------------------------------------------

_HTTP: dict[str, type[HttpRateSource]] = {
    "kraken": KrakenSource,
    "coinbase": CoinbaseSource,
    "bitstamp": BitstampSource,
    "coingecko": CoinGeckoSource,
}
SOURCE_NAMES = (*_HTTP, "fixed")


def parse_source_names(names: str) -> list[str]:
    """``" Kraken, coinbase ,fixed"`` → ``["kraken", "coinbase", "fixed"]``, checked."""
    parsed = [n.strip().lower() for n in names.split(",") if n.strip()]
    if not parsed:
        raise ValueError("no rate sources configured: use e.g. 'kraken,coinbase,fixed'")
    for name in parsed:
        if name not in SOURCE_NAMES and name not in plugin_names("rate_sources"):
            known = (*SOURCE_NAMES, *plugin_names("rate_sources"))
            raise ValueError(f"unknown rate source {name!r}: use {', '.join(known)}")
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"rate source listed twice in {names!r}")
    return parsed


def _plugin_source(name: str, *, timeout: float,
                   transport: httpx.AsyncBaseTransport | None) -> RateSource:
    source = load_plugin("rate_sources", name)(timeout=timeout, transport=transport)
    if not isinstance(source, RateSource):
        raise PluginError(f"the rate source plug-in {name!r} made {type(source).__name__}, "
                          "which has no name, fetch() and close()")
    return source


def build_rate_service(
    names: str,
    fixed: Mapping[str, Decimal | int | str] | None = None,
    *,
    ttl_seconds: float = 60.0,
    timeout: float = DEFAULT_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
    coingecko_api_key: str | None = None,
) -> RateService:
    """A RateService over the named sources, in the order given (the first is primary).
    ``fixed`` holds the prices of the ``fixed`` source in major units per BTC; ``transport``
    reaches every HTTP source (tests point it at a fake server).

    ``fixed`` behind live sources ("kraken,fixed") prices invoices at the fixed prices whenever
    the exchanges are down: right for a demo, rarely for production, so it is logged."""
    parsed = parse_source_names(names)
    if "fixed" in parsed and parsed[0] != "fixed":
        log.warning("rate_fixed_fallback", sources=parsed,
                    note="invoices use the fixed prices whenever the live sources fail")
    sources: list[RateSource] = []
    for name in parsed:
        if name == "fixed":
            if not fixed:
                raise ValueError("rate source 'fixed' needs fixed prices, e.g. {'USD': '60000'}")
            sources.append(FixedRateSource(fixed))
        elif name == "coingecko":
            sources.append(CoinGeckoSource(api_key=coingecko_api_key, timeout=timeout,
                                           transport=transport))
        elif name in _HTTP:
            sources.append(_HTTP[name](timeout=timeout, transport=transport))
        else:
            sources.append(_plugin_source(name, timeout=timeout, transport=transport))
    # The whole fetch of one source may take its connect, write and read timeouts in a row.
    return RateService(sources, ttl_seconds=ttl_seconds, source_timeout=timeout * 2)
