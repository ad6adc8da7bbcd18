"""Event metrics: counters and histograms recorded where the event happens (a payment
settling on either rail, a deposit credited, an HTTP request answered), exported on
``GET /metrics`` by :mod:`satvault.metrics`.

They are plain ``prometheus_client`` objects. With ``PROMETHEUS_MULTIPROC_DIR`` set before the
process starts (``satvault serve --workers N`` runs several processes), prometheus_client
keeps each process's values in a file of that directory and the scrape adds them up; without
it they live in this process's memory. Only counters and histograms are defined here: their
sums across processes are meaningful. The state of the world (invoices by status, balances,
backlogs) is not counted here but read from the database at scrape time.

This module sits at the base of the layers (beside the logs) so that any domain package may
record an event without importing the metrics package, which reads many domains' tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["HTTP_SECONDS", "PAYMENTS", "PAYMENTS_RECEIVED", "PAYMENT_SECONDS", "SIGNER_REFUSALS",
           "EventCollector"]

PAYMENTS = Counter(
    "satvault_payments", "Outgoing payments (withdrawals) that reached an outcome, by rail "
    "and outcome. lightning: succeeded, failed, retried, unknown. onchain (one per withdrawal "
    "of a payout batch): broadcast (the network accepted it, not final), succeeded "
    "(confirmed), retried (the broadcast was rejected and the withdrawal requeued), unknown "
    "(the broadcast's answer was lost; sent again later), stuck (an input was spent by a "
    "transaction we do not know: a person must look).", ["rail", "outcome"])
PAYMENT_SECONDS = Histogram(
    "satvault_payment_duration_seconds", "Time from handing a payment to the network to its "
    "final answer, by rail: lightning, the node's answer to the payment; onchain, from the "
    "payout batch (signed and broadcast at once) to its confirmation.", ["rail"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 600, 1800, 3600, 7200, 21600))
PAYMENTS_RECEIVED = Counter(
    "satvault_payments_received", "Incoming payments credited to a wallet or the platform, by "
    "rail and outcome. lightning: credited (an invoice settled at the node, seen by the "
    "listener). onchain: credited (a deposit with its confirmations, credited by the chain "
    "watcher), reversed (a credited deposit taken back after a reorg or double spend).",
    ["rail", "outcome"])
HTTP_SECONDS = Histogram(
    "satvault_http_request_duration_seconds", "HTTP requests answered, by method, route "
    "template and status class (2xx, 4xx …).", ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
SIGNER_REFUSALS = Counter(
    "satvault_signer_refusals", "Signing requests the signer refused (its policy or its caps), "
    "by the refusal's type; the signer's audit log (`satvault signer refusals`) has each "
    "one's reason.", ["error_type"])


class EventCollector(Collector):
    """The event metrics for a scrape: every process's added up (``PROMETHEUS_MULTIPROC_DIR``
    set) or this process's registry (with prometheus_client's process and GC metrics)."""

    def collect(self) -> Iterable[Metric]:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            inner = CollectorRegistry()
            MultiProcessCollector(inner, path=directory)  # type: ignore[no-untyped-call]
            return inner.collect()
        return REGISTRY.collect()
