"""Rate errors: foreign errors (httpx, JSON, a missing key) stop at the source and become these.

::

    RateError
    ├── UnsupportedCurrency   not a currency we know the scale of, or no source quotes it
    ├── SourceUnreachable     one source: no connection, timed out, HTTP 5xx or 429
    ├── BadRateResponse       one source answered, but not a price we can read
    ├── RateConflict          another process recorded an accepted rate for the currency at
    │                         the same moment: check the rate again against it
    └── RateUnavailable       every source failed (``failures`` names each one and why):
        │                     no invoice may be created
        └── RateRefused       sources answered, but too few, disagreeing, or at a price too
                              far from the last one accepted: no invoice either

A single source raises the first three; ``RateService`` collects them and raises
``RateUnavailable`` (or ``UnsupportedCurrency`` when every source said so). At the HTTP edge
``UnsupportedCurrency`` is the merchant's mistake (422) and ``RateUnavailable`` ours (503).
"""

from __future__ import annotations

from collections.abc import Sequence

from satvault.kernel.errors import SatvaultError

__all__ = [
    "BadRateResponse",
    "RateConflict",
    "RateError",
    "RateRefused",
    "RateUnavailable",
    "SourceUnreachable",
    "UnsupportedCurrency",
]


class RateError(SatvaultError):
    pass


class UnsupportedCurrency(RateError):
    pass


class SourceUnreachable(RateError):
    pass


class BadRateResponse(RateError):
    pass


class RateConflict(RateError):
    pass


class RateUnavailable(RateError):
    """No source answered for ``currency``; ``failures`` is ``(source name, reason)`` in the
    order the sources were tried."""

    def __init__(self, currency: str, failures: Sequence[tuple[str, str]]) -> None:
        self.currency = currency
        self.failures = tuple(failures)
        detail = "; ".join(f"{name}: {reason}" for name, reason in self.failures)
        super().__init__(f"no BTC/{currency} rate from any source ({detail or 'no sources'})")


class RateRefused(RateUnavailable):
    """Answers came, but are not trusted to price an invoice: ``reason`` says why."""

    def __init__(self, currency: str, reason: str,
                 failures: Sequence[tuple[str, str]] = ()) -> None:
        self.currency = currency
        self.failures = tuple(failures)
        self.reason = reason
        failed = "; ".join(f"{name}: {why}" for name, why in self.failures)
        RateError.__init__(self, f"BTC/{currency} rate refused: {reason}"
                           + (f" (failed: {failed})" if failed else ""))
