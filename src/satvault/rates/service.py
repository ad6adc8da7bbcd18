"""``RateService``: one rate per currency from a list of sources, cached for a TTL.

Rates are compared, not taken on trust. Every live source is asked at once, each within
``source_timeout``; one failing (unreachable, a bad answer, no answer in time, or no quote for
that currency) only leaves fewer answers. The rate is the median of the answers, refused
(``RateRefused``, so no invoice) when fewer than ``min_sources`` answered, when an answer lies
more than ``max_spread_bp`` from the median, or when it breaks a movement bound (``bounds``):
more than ``max_move_bp`` from the last rate accepted for the currency within
``move_window_seconds``, or the rates accepted within ``drift_window_seconds`` spanning more
than ``max_drift_bp`` with it; a currency's first rate, with nothing accepted before to
measure it against, needs ``first_min_sources`` live sources agreeing (a ``fixed`` source
alone is a person's prices, taken as given). A ``fixed`` source listed with live ones is not
a vote: it answers only when no live source did. The rate returned names its source
(``"kraken"`` for a single answer, ``"median(kraken,coinbase,bitstamp)"`` for several) and
the oldest answer's time; a cached rate keeps both, so an invoice records where its rate
really came from.

The accepted rates are remembered by ``memory``: the database's ``accepted_rates``
(``memory.DbRateMemory``, what the composition root gives), read and written only when a rate
is fetched, so a restart and every other process bound their rates by the same history; or,
for a service built without one, this process alone (``memory.ProcessMemory``). The windows
are measured on the process clock (``satvault.kernel.clock``), the cache's TTL on ``clock``.

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
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

import httpx

from satvault.config import Settings
from satvault.kernel.clock import utcnow
from satvault.kernel.plugins import PluginError, load_plugin, plugin_names
from satvault.logs import get_logger
from satvault.rates._http import DEFAULT_TIMEOUT, HttpRateSource
from satvault.rates.base import Rate, RateSource, normalize_currency
from satvault.rates.bitstamp import BitstampSource
from satvault.rates.bounds import Bounds, beyond_bp
from satvault.rates.coinbase import CoinbaseSource
from satvault.rates.coingecko import CoinGeckoSource
from satvault.rates.convert import apply_spread, fiat_to_msat, msat_to_fiat, sats_to_msat
from satvault.rates.errors import RateError, RateRefused, RateUnavailable, UnsupportedCurrency
from satvault.rates.fixed import FixedRateSource
from satvault.rates.kraken import KrakenSource
from satvault.rates.memory import ProcessMemory, RateMemory

__all__ = [
    "SOURCE_NAMES",
    "RateService",
    "apply_spread",
    "beyond_bp",
    "build_rate_service",
    "comparing_rate_service",
    "fiat_to_msat",
    "median_minor",
    "msat_to_fiat",
    "parse_source_names",
    "sats_to_msat",
]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Cached:
    rate: Rate
    expires_at: float  # on the service's monotonic clock


def median_minor(values: Sequence[int]) -> int:
    """The median of integer rates; of an even count, the mean of the two middle ones rounded
    down (a lower rate charges more msat: the rounding favours the merchant)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) // 2


class RateService:
    def __init__(
        self,
        sources: Sequence[RateSource],
        *,
        ttl_seconds: float = 60.0,
        source_timeout: float | None = 10.0,
        clock: Callable[[], float] = time.monotonic,
        min_sources: int = 1,
        max_spread_bp: int = 300,
        max_move_bp: int = 2000,
        move_window_seconds: float = 3600.0,
        max_drift_bp: int = 3000,
        drift_window_seconds: float = 86_400.0,
        first_min_sources: int = 1,
        memory: RateMemory | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        """``clock`` is monotonic seconds, for the TTL (inject a fake one in tests); ``now``
        the wall clock the movement windows are measured on, shared with other processes.
        ``source_timeout`` bounds each source's whole fetch, on top of its HTTP timeouts, so a
        server that drips bytes cannot hold an invoice up. ``ttl_seconds=0`` disables caching
        (concurrent callers still share a fetch).

        A rate needs ``min_sources`` answers, none more than ``max_spread_bp`` from their
        median; it must not be more than ``max_move_bp`` from the last rate accepted for the
        currency if that was less than ``move_window_seconds`` ago, nor make the rates
        accepted within ``drift_window_seconds`` span more than ``max_drift_bp`` (a window of
        0: no such bound); a currency's first rate needs ``first_min_sources`` live answers
        agreeing, unless every source is fixed prices. ``memory`` remembers the accepted
        rates (default: this process only). A ``FixedRateSource`` next to other sources is a
        fallback, never a vote."""
        if not sources:
            raise ValueError("RateService needs at least one rate source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"rate source names must be unique, got {names}")
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must not be negative")
        voters = [s for s in sources if not isinstance(s, FixedRateSource)] or list(sources)
        if not 1 <= min_sources <= len(voters):
            raise ValueError(f"rate_min_sources is {min_sources}, but {len(voters)} live rate "
                             "source(s) are configured (a fixed source is a fallback only)")
        if max_spread_bp < 0:
            raise ValueError("the rate spread limit must not be negative")
        self._bounds = Bounds(max_move_bp, timedelta(seconds=move_window_seconds),
                              max_drift_bp, timedelta(seconds=drift_window_seconds),
                              first_min_sources)
        self._sources = tuple(sources)
        self._voters = tuple(voters)
        self._fallbacks = tuple(s for s in sources if s not in voters)
        self._fixed_only = all(isinstance(s, FixedRateSource) for s in sources)
        self._ttl = ttl_seconds
        self._source_timeout = source_timeout
        self._clock = clock
        self._min_sources = min_sources
        self._max_spread_bp = max_spread_bp
        self._memory: RateMemory = memory if memory is not None else ProcessMemory()
        self._now = now
        self._cache: dict[str, _Cached] = {}
        self._inflight: dict[str, asyncio.Task[Rate]] = {}

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._sources)

    @property
    def bounds(self) -> Bounds:
        return self._bounds

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

    async def _ask(self, source: RateSource, code: str) -> Rate | tuple[str, bool]:
        """One source's rate, or (why it failed, whether it does not quote ``code``)."""
        try:
            async with asyncio.timeout(self._source_timeout):
                rate = await source.fetch(code)
        except TimeoutError:
            return f"no answer within {self._source_timeout}s", False
        except UnsupportedCurrency as exc:
            return str(exc), True
        except RateError as exc:
            return str(exc), False
        except Exception as exc:
            # A source (a plug-in) breaking its contract fails like an unreachable one: the
            # invoice is refused (503) when too few others answer, not answered with the
            # plug-in's exception (found from outside: a 500, and the fallbacks never asked).
            log.warning("rate_source_broke_contract", source=source.name, error=repr(exc))
            return f"{type(exc).__name__}: {exc}", False
        if not isinstance(rate, Rate):
            return f"answered {type(rate).__name__}, not a Rate", False
        if rate.currency != code or rate.spread_bp:
            return f"answered {rate.currency} (spread {rate.spread_bp} bp) for {code}", False
        return rate

    async def median(self, currency: str) -> tuple[Rate, int | None]:
        """What the sources agree on for ``currency`` now, as :meth:`rate` but not cached,
        remembered, nor checked against the rates accepted before: for a person to look at
        (``satvault rates show``) and perhaps accept (``satvault rates accept``). With it,
        how many live sources agreed on it (None: fixed prices, a person's)."""
        return await self._agreed(normalize_currency(currency))

    async def _fetch(self, code: str) -> Rate:
        rate, vouched = await self._agreed(code)
        if self._bounds.active:
            # After the sources answered (no transaction open during the network calls);
            # only here, on a cache miss, is the memory read or written.
            refusal = await self._memory.accept(rate, at=self._now(), bounds=self._bounds,
                                                vouched=vouched)
            if refusal is not None:
                log.error(refusal.event, currency=code, reason=refusal.reason)
                raise RateRefused(code, refusal.reason)
        self._cache[code] = _Cached(rate, self._clock() + self._ttl)
        return rate

    async def _agreed(self, code: str) -> tuple[Rate, int | None]:
        # Every live source at once, each within its own timeout: one slow exchange costs
        # one timeout, not one per source.
        asked = list(self._voters)
        results = list(await asyncio.gather(*(self._ask(s, code) for s in asked)))
        if not any(isinstance(r, Rate) for r in results):
            for source in self._fallbacks:  # the fixed prices, only when no live one answered
                asked.append(source)
                results.append(await self._ask(source, code))
                if isinstance(results[-1], Rate):
                    break
        answers = [r for r in results if isinstance(r, Rate)]
        failures = [(s.name, r[0]) for s, r in zip(asked, results, strict=True)
                    if not isinstance(r, Rate)]
        if not answers:
            log.error("rate_unavailable", currency=code, failures=dict(failures))
            if all(not isinstance(r, Rate) and r[1] for r in results) \
                    and len(asked) == len(self._sources):
                raise UnsupportedCurrency(f"no rate source quotes {code} ("
                                          + "; ".join(f"{n}: {r}" for n, r in failures) + ")")
            raise RateUnavailable(code, failures)
        if failures:
            log.warning("rate_fallback", currency=code, answered=[a.source for a in answers],
                        failures=dict(failures))
        # Fixed prices vouch for themselves only when they are all there is (a person chose
        # them); as the fallback behind live sources they are one source's word.
        vouched = None if self._fixed_only else len(answers)
        return self._agree(code, answers, failures, asked=len(asked)), vouched

    def _agree(self, code: str, answers: list[Rate], failures: list[tuple[str, str]], *,
               asked: int) -> Rate:
        """One rate from the answers: the median, if enough of them agree around it."""
        if len(answers) < self._min_sources:
            reason = (f"{len(answers)} of {asked} rate sources answered, "
                      f"{self._min_sources} required")
            log.error("rate_too_few_sources", currency=code, reason=reason,
                      failures=dict(failures))
            raise RateRefused(code, reason, failures)
        if len(answers) == 1:
            return answers[0]
        median = median_minor([a.minor_per_btc for a in answers])
        outliers = [a for a in answers if beyond_bp(a.minor_per_btc, median, self._max_spread_bp)]
        if outliers:
            said = ", ".join(f"{a.source}: {a.major_per_btc}" for a in answers)
            reason = (f"the sources disagree by more than "
                      f"{Decimal(self._max_spread_bp).scaleb(-2):.2f}% around the median "
                      f"{Decimal(median).scaleb(-answers[0].scale)} ({said})")
            log.error("rate_sources_disagree", currency=code, reason=reason)
            raise RateRefused(code, reason)
        names = ",".join(a.source for a in answers)
        return Rate(code, median, f"median({names})", min(a.fetched_at for a in answers))

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
    min_sources: int = 1,
    max_spread_bp: int = 300,
    max_move_bp: int = 2000,
    move_window_seconds: float = 3600.0,
    max_drift_bp: int = 3000,
    drift_window_seconds: float = 86_400.0,
    first_min_sources: int = 1,
    memory: RateMemory | None = None,
) -> RateService:
    """A RateService over the named sources, in the order given (names a median's sources).
    ``fixed`` holds the prices of the ``fixed`` source in major units per BTC; ``transport``
    reaches every HTTP source (tests point it at a fake server); ``memory`` remembers the
    accepted rates (the composition root gives the database's).

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
    return RateService(sources, ttl_seconds=ttl_seconds, source_timeout=timeout * 2,
                       min_sources=min_sources, max_spread_bp=max_spread_bp,
                       max_move_bp=max_move_bp, move_window_seconds=move_window_seconds,
                       max_drift_bp=max_drift_bp, drift_window_seconds=drift_window_seconds,
                       first_min_sources=first_min_sources, memory=memory)


def comparing_rate_service(settings: Settings, *, ttl_seconds: float | None = None
                           ) -> RateService:
    """The settings' sources compared as the settings say (``rate_min_sources`` answering,
    within ``rate_max_spread_bp``), remembering nothing: for a rate wanted where no runtime
    holds the service (a report, a SAR, a command), never one priced at fixed prices alone
    when the live sources failed. Found from outside: the reports were built with the
    defaults (one source enough), so a CTR was priced at the fallback fixed prices while
    invoices were refused for lack of agreeing sources."""
    return build_rate_service(
        settings.rate_sources, dict(settings.fixed_rates),
        ttl_seconds=settings.rate_ttl_seconds if ttl_seconds is None else ttl_seconds,
        min_sources=settings.rate_min_sources, max_spread_bp=settings.rate_max_spread_bp)
