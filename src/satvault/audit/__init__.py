"""The audit log: append-only, hash-chained rows (actor, action, object, before/after, time,
the previous row's hash), written by every domain through :func:`record`, sealed into the
chain by :func:`seal` (which also chains the ledger's transfers), checked by :func:`verify`
and anchored by :func:`anchor`. It sits just above the database layer so every domain,
the ledger's neighbours included, can write to it. See ``chain`` for the hash format and
``service`` for the sealing rule."""

from satvault.audit.chain import Break
from satvault.audit.models import AuditEvent
from satvault.audit.service import (
    Head,
    Sealed,
    Verification,
    anchor,
    head,
    list_events,
    record,
    seal,
    verify,
)

__all__ = ["AuditEvent", "Break", "Head", "Sealed", "Verification", "anchor", "head",
           "list_events", "record", "seal", "verify"]
