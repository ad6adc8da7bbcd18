"""Events: the transactional outbox, signed webhooks delivered from it, and live updates
(server-sent events) read from it.

* :func:`emit` — write an event in the caller's transaction (and queue its webhook deliveries);
* :class:`WebhookDispatcher` — deliver them, with retries in the database (its worker is
  ``satvault.workers.webhook_worker``); :func:`redeliver` — queue one again by hand;
* :func:`sign` / :func:`verify` — the ``Satvault-Signature`` header;
* :func:`check_url` — the SSRF guard for user-supplied URLs;
* :mod:`satvault.events.relay` / :mod:`satvault.events.jetstream` — with
  ``event_stream = "nats"``, the relay of the outbox to NATS JetStream and its consumers
  (docs/events.md); :mod:`satvault.events.live` — the live updates' one subscriber per
  process to the stream.

Their HTTP endpoints (webhooks, the event stream) live in :mod:`satvault.web.routes`.
"""

from satvault.events.catalog import EVENT_TYPES, WEBHOOK_EVENT_TYPES
from satvault.events.delivery import WebhookDispatcher, redeliver
from satvault.events.outbox import emit, notifier
from satvault.events.signing import sign, verify
from satvault.events.ssrf import check_url

__all__ = ["EVENT_TYPES", "WEBHOOK_EVENT_TYPES", "WebhookDispatcher", "check_url", "emit",
           "notifier", "redeliver", "sign", "verify"]
