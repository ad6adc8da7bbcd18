"""Errors of the events domain (outbox, webhooks, live updates).

::

    EventsError
    ├── InvalidWebhook      a webhook the API cannot accept: unknown event type, weak secret,
    │   │                   malformed URL
    │   └── UnsafeUrl       refused by the SSRF guard: http outside development, or a host
    │                       that resolves to a private, loopback, link-local, metadata …
    │                       address (also raised at send time, where it fails the attempt)
    ├── InvalidStream       a live-update stream asked for neither or both of invoice/wallet,
    │                       or with a malformed Last-Event-ID
    ├── InvalidSignature    :func:`satvault.events.signing.verify` refused a header: malformed,
    │                       timestamp outside the tolerance (a replay), or no matching HMAC
    └── StreamUnavailable   NATS JetStream (event_stream = "nats") could not be reached, or
                            refused a publish, a stream set-up or a consumer's fetch

A webhook or delivery that does not exist, or belongs to someone else, is
:class:`satvault.accounts.errors.NotFound` (the same answer for both).
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["EventsError", "InvalidSignature", "InvalidStream", "InvalidWebhook",
           "StreamUnavailable", "UnsafeUrl"]


class EventsError(SatvaultError):
    pass


class InvalidWebhook(EventsError):
    pass


class UnsafeUrl(InvalidWebhook):
    pass


class InvalidStream(EventsError):
    pass


class InvalidSignature(EventsError):
    pass


class StreamUnavailable(EventsError):
    pass
