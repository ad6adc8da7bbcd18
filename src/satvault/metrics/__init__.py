"""Metrics and alerts (issue 13): ``GET /metrics`` in Prometheus' text format and the alerts
worker's critical notifications.

* :mod:`satvault.metrics.state` — the state of the world read at each scrape (invoices,
  withdrawals, webhook backlog, risk decisions, custody tiers against liabilities, watcher
  lag, Lightning liquidity);
* :mod:`satvault.metrics.exposition` — the scrape's body, with the event counters and
  histograms of :mod:`satvault.telemetry` (multi-process aware);
* :mod:`satvault.metrics.alerts` — the critical conditions, told once on opening and once on
  resolving to webhooks and e-mail.

It reads many domains' tables, so it sits high in the layers: just under the workers.
"""
