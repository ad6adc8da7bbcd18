"""The transactional outbox: every change worth reporting writes an event row in the same
database transaction as the change itself.

Whoever changes an invoice, a withdrawal or a wallet calls :func:`emit` with the session of
that unit of work: one INSERT. The event commits or rolls back with the change. An event of a
store is written with ``fanout = 'pending'``; the webhook dispatcher's :func:`fan_out` later
creates one ``webhook_deliveries`` row for each enabled webhook of the store subscribed to its
type and marks the event ``done``, in one transaction, so a webhook can never report something
that did not happen, nor miss something that did, and nothing is held in memory (a restart
loses nothing). The subscriptions that count are those at fan-out time. The outbox id is the
global order.

After a transaction that emitted commits, :data:`notifier` wakes in-process listeners (the
webhook worker, for a store's event; live-update streams) so they need not wait for their
next poll; other processes find the rows by polling.

The payload is the full object as JSON (not only its id). Every consumer sees the same
envelope, built once by :func:`envelope`::

    {"id": 42, "type": "invoice.settled", "created_at": "2026-…+00:00", "data": {…}}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Table, event, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from satvault.db import utcnow
from satvault.events.catalog import EVENT_TYPES, SUBJECT_TYPES, matches
from satvault.events.models import OutboxEvent, Webhook, WebhookDelivery
from satvault.kernel.ids import new_id
from satvault.ledger.store import BALANCES_CHANGED
from satvault.logs import get_logger

__all__ = ["OutboxNotifier", "dumps", "emit", "envelope", "fan_out", "mark_changed",
           "notifier"]

log = get_logger(__name__)
outbox_t = cast(Table, OutboxEvent.__table__)
deliveries_t = cast(Table, WebhookDelivery.__table__)
_FLAG = "satvault.events.changed"
_DELIVERIES = "satvault.events.deliveries_queued"


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)  # amounts are integers; a fractional Decimal is a caller's bug
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in an event payload")


def dumps(value: Any) -> str:
    """Compact JSON for payloads: datetimes as ISO 8601, integral Decimals as ints."""
    return json.dumps(value, separators=(",", ":"), default=_default, allow_nan=False)


def envelope(event_id: int, type: str, created_at: datetime, payload_json: str) -> str:
    """The JSON document every consumer receives; ``payload_json`` is embedded verbatim."""
    return (f'{{"id":{int(event_id)},"type":{json.dumps(type)},'
            f'"created_at":{json.dumps(created_at.isoformat())},"data":{payload_json}}}')


class OutboxNotifier:
    """In-process wake-ups once a transaction that wrote to the outbox has committed."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()
        self._callbacks: list[tuple[Callable[[], None], bool]] = []

    def subscribe(self, callback: Callable[[], None], *, deliveries_only: bool = False
                  ) -> Callable[[], None]:
        """Call ``callback`` after every such commit (with ``deliveries_only``, only after
        one that may have webhook deliveries to make or send: a store's event, a redelivery);
        returns the unsubscribe function."""
        entry = (callback, deliveries_only)
        self._callbacks.append(entry)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(entry)

        return unsubscribe

    def notify(self, *, deliveries: bool = True) -> None:
        for waiter in list(self._waiters):
            waiter.set()
        for callback, deliveries_only in list(self._callbacks):
            if deliveries_only and not deliveries:
                continue
            try:
                callback()
            except Exception:  # a listener's bug must not break the committing caller
                log.exception("outbox_listener_failed")

    async def wait(self, timeout: float) -> bool:
        """Sleep until the next notification or ``timeout``; True if notified."""
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.discard(waiter)


notifier = OutboxNotifier()


def mark_changed(session: AsyncSession, *, deliveries: bool = True) -> None:
    """Have :data:`notifier` fire once this session's transaction commits; ``deliveries``:
    webhook deliveries were queued (only then is the webhook worker woken)."""
    _mark(session.sync_session, deliveries=deliveries)


def _mark(session: Session, *, deliveries: bool) -> None:
    session.info[_FLAG] = True
    if deliveries:
        session.info[_DELIVERIES] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    deliveries = bool(session.info.pop(_DELIVERIES, False))
    if session.info.pop(_FLAG, False):
        notifier.notify(deliveries=deliveries)


async def emit(
    session: AsyncSession,
    *,
    type: str,
    subject_type: str,
    subject_id: str,
    payload: Mapping[str, Any],
    store_id: str | None = None,
    wallet_id: str | None = None,
    now: datetime | None = None,
) -> int:
    """Write an event in the caller's transaction (never commits); the webhooks of
    ``store_id`` subscribed to ``type`` get it through :func:`fan_out`. Returns the event id.

    ``wallet_id`` routes the event to that wallet's live-update stream (it defaults to the
    subject for wallet events). Events without ``store_id`` reach no webhook."""
    return await session.run_sync(
        _write, type=type, subject_type=subject_type, subject_id=subject_id, payload=payload,
        store_id=store_id, wallet_id=wallet_id, now=now)


def _write(session: Session, *, type: str, subject_type: str, subject_id: str,
           payload: Mapping[str, Any], store_id: str | None, wallet_id: str | None,
           now: datetime | None) -> int:
    """:func:`emit` on the synchronous session (commit hooks run there)."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    if subject_type not in SUBJECT_TYPES or type.split(".", 1)[0] != subject_type:
        raise ValueError(f"event {type!r} cannot have a subject of type {subject_type!r}")
    if subject_type == "wallet":
        if wallet_id not in (None, subject_id):
            raise ValueError("a wallet event's wallet_id is its subject")
        wallet_id = subject_id
    created_at = now or utcnow()
    payload_json = dumps(dict(payload))
    event_id = int(session.execute(
        insert(outbox_t).returning(outbox_t.c.id),
        {"type": type, "subject_type": subject_type, "subject_id": subject_id,
         "store_id": store_id, "wallet_id": wallet_id, "payload": payload_json,
         "created_at": created_at, "fanout": None if store_id is None else "pending"},
    ).scalar_one())
    # A store's event wakes the webhook worker, which fans it out (and finds no webhook
    # wanting it, often: one short step, never a query in the caller's transaction).
    _mark(session, deliveries=store_id is not None)
    return event_id


async def fan_out(session: AsyncSession, *, limit: int = 500) -> int:
    """Create the webhook deliveries of up to ``limit`` pending events, oldest first, and mark
    them done (the caller commits); returns how many events it fanned out. Concurrent
    dispatchers skip each other's events (PostgreSQL), or take turns (SQLite)."""
    pending = (await session.execute(
        select(outbox_t.c.id, outbox_t.c.type, outbox_t.c.store_id, outbox_t.c.payload,
               outbox_t.c.created_at)
        .where(outbox_t.c.fanout == literal_column("'pending'"))
        .order_by(outbox_t.c.id).limit(limit).with_for_update(skip_locked=True)
    )).all()
    if not pending:
        return 0
    stores = sorted({e.store_id for e in pending if e.store_id is not None})
    hooks: dict[str, list[tuple[str, list[str]]]] = {}
    for hook_id, store_id, events in (await session.execute(
            select(Webhook.id, Webhook.store_id, Webhook.events)
            .where(Webhook.store_id.in_(stores), Webhook.enabled.is_(True))
            .order_by(Webhook.id))).all():
        hooks.setdefault(store_id, []).append((hook_id, events.split()))
    rows: list[dict[str, Any]] = []
    for e in pending:
        wanted = [hook_id for hook_id, subscribed in hooks.get(e.store_id, ())
                  if matches(subscribed, e.type)]
        if not wanted:
            continue
        body = envelope(e.id, e.type, e.created_at, e.payload)
        rows += [{"id": new_id("whd"), "webhook_id": hook_id, "event_id": e.id,
                  "event_type": e.type, "status": "pending", "attempts": 0,
                  "next_attempt_at": e.created_at, "request_body": body,
                  "created_at": e.created_at, "updated_at": e.created_at}
                 for hook_id in wanted]
    if rows:
        await session.execute(insert(deliveries_t), rows)
    await session.execute(update(outbox_t).where(outbox_t.c.id.in_([e.id for e in pending]))
                          .values(fanout="done"))
    return len(pending)


@event.listens_for(Session, "before_commit")
def _balances_changed(session: Session) -> None:
    """One ``wallet.balance_changed`` per wallet whose ledger account this transaction moved,
    with the balances it commits (the ledger notes the accounts in ``session.info``)."""
    changed = session.info.pop(BALANCES_CHANGED, None)
    if not changed:
        return
    from satvault.accounts.models import Wallet
    from satvault.accounts.views import wallet_balances
    from satvault.ledger.models import LedgerAccount

    rows = session.execute(
        select(Wallet, LedgerAccount)
        .join(LedgerAccount, LedgerAccount.id == Wallet.ledger_account_id)
        .where(Wallet.ledger_account_id.in_(sorted(changed)))
        .order_by(Wallet.id)
        .execution_options(populate_existing=True)  # the ledger wrote with Core statements
    ).all()
    for wallet, account in rows:
        _write(session, type="wallet.balance_changed", subject_type="wallet",
               subject_id=wallet.id, payload=wallet_balances(wallet, account),
               store_id=None, wallet_id=None, now=None)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_FLAG, None)
    session.info.pop(_DELIVERIES, None)
    session.info.pop(BALANCES_CHANGED, None)
