"""The event types satvault emits, and which of them a webhook may subscribe to.

A type is ``<subject>.<what happened>``. Webhooks choose exact types or a whole subject with a
wildcard (``invoice.*``, ``withdrawal.*``). Wallet events exist for live updates (server-sent
events on dashboards) and are not offered to webhooks, which belong to a store.
"""

from __future__ import annotations

from collections.abc import Iterable

from satvault.events.errors import InvalidWebhook

__all__ = ["EVENT_TYPES", "SUBJECT_TYPES", "WEBHOOK_EVENT_TYPES", "matches",
           "normalise_subscription"]

INVOICE_EVENTS = frozenset({
    "invoice.created", "invoice.payment_received", "invoice.payment_reversed",
    "invoice.processing", "invoice.settled", "invoice.expired", "invoice.invalid",
})
WITHDRAWAL_EVENTS = frozenset({
    "withdrawal.created", "withdrawal.awaiting_approval", "withdrawal.approved",
    "withdrawal.broadcast", "withdrawal.confirmed", "withdrawal.failed", "withdrawal.cancelled",
})
WALLET_EVENTS = frozenset({"wallet.balance_changed"})

WEBHOOK_EVENT_TYPES = INVOICE_EVENTS | WITHDRAWAL_EVENTS
EVENT_TYPES = WEBHOOK_EVENT_TYPES | WALLET_EVENTS
SUBJECT_TYPES = frozenset({"invoice", "withdrawal", "wallet"})
_WILDCARDS = frozenset({"invoice.*", "withdrawal.*"})


def matches(subscription: Iterable[str], event_type: str) -> bool:
    """Whether a webhook subscribed to ``subscription`` wants an event of ``event_type``."""
    subject = event_type.split(".", 1)[0]
    return any(s == event_type or s == f"{subject}.*" for s in subscription)


def normalise_subscription(events: Iterable[str]) -> list[str]:
    """Checked, de-duplicated and sorted; an exact type already covered by its wildcard goes."""
    wanted = {e.strip() for e in events if e.strip()}
    if not wanted:
        raise InvalidWebhook("a webhook needs at least one event type")
    unknown = wanted - WEBHOOK_EVENT_TYPES - _WILDCARDS
    if unknown:
        raise InvalidWebhook(
            f"unknown event type(s) {sorted(unknown)}; known: "
            f"{sorted(WEBHOOK_EVENT_TYPES | _WILDCARDS)}")
    wildcards = {w for w in wanted if w.endswith(".*")}
    return sorted(e for e in wanted
                  if e in wildcards or f"{e.split('.', 1)[0]}.*" not in wildcards)
