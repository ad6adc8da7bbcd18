"""The transactional outbox: every change worth reporting writes an event row in the same
database transaction as the change itself.

Whoever changes an invoice, a withdrawal or a wallet calls :func:`emit` with the session of
that unit of work. The event, and one ``webhook_deliveries`` row for each enabled webhook of
the store subscribed to its type, commit or roll back with the change: a webhook can never
report something that did not happen, nor miss something that did, and nothing is held in
memory (a restart loses nothing). The outbox id is the global order.

After a transaction that emitted commits, :data:`notifier` wakes in-process listeners (the
webhook worker, live-update streams) so they need not wait for their next poll; other
processes find the rows by polling.

The payload is the full object as JSON (not only its id). Every consumer sees the same
envelope, built once by :func:`envelope`::

    {"id": 42, "type": "invoice.settled", "created_at": "2026-…+00:00", "data": {…}}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, cast
from uuid import UUID
from weakref import WeakKeyDictionary

from sqlalchemy import Table, event, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, aliased

from satvault.accounts.models import Wallet
from satvault.accounts.views import wallet_balances
from satvault.db import utcnow
from satvault.events.catalog import EVENT_TYPES, SUBJECT_TYPES, matches
from satvault.events.models import DeliveryStatus, OutboxEvent, Webhook, WebhookDelivery
from satvault.kernel.ids import new_id
from satvault.ledger.models import LedgerAccount
from satvault.ledger.store import BALANCES_AFTER, BALANCES_CHANGED
from satvault.logs import get_logger

__all__ = ["Event", "OutboxNotifier", "OutboxSession", "StreamOutboxSession", "dumps", "emit",
           "emit_many", "envelope", "install", "mark_changed", "notifier"]

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
        one that queued webhook deliveries); returns the unsubscribe function."""
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


class OutboxSession(Session):
    """The session class of every session factory the composition root wires (:func:`install`).
    Its commit hooks, and only its, write the ``wallet.balance_changed`` events of the ledger
    accounts a transaction moved and wake :data:`notifier` once the transaction commits."""

    # Queue the webhook deliveries in the event's own transaction (event_stream = "outbox").
    webhook_fanout: ClassVar[bool] = True


class StreamOutboxSession(OutboxSession):
    """:class:`OutboxSession` for ``event_stream = "nats"``: events are written the same way,
    but their webhook deliveries are queued by the stream's consumer
    (:class:`satvault.events.fanout.WebhookFanout`), not by the writing transaction."""

    webhook_fanout: ClassVar[bool] = False


def install(sessions: async_sessionmaker[AsyncSession], *, webhook_fanout: bool = True
            ) -> async_sessionmaker[AsyncSession]:
    """Wire the outbox's commit hooks into ``sessions`` (called by the composition root, once
    per session factory; importing this module registers nothing on other sessions).
    ``webhook_fanout``: False when the event stream's consumer queues the deliveries."""
    sessions.configure(sync_session_class=OutboxSession if webhook_fanout
                       else StreamOutboxSession)
    return sessions


def mark_changed(session: AsyncSession, *, deliveries: bool = True) -> None:
    """Have :data:`notifier` fire once this session's transaction commits; ``deliveries``:
    webhook deliveries were queued (only then is the webhook worker woken)."""
    _mark(session.sync_session, deliveries=deliveries)


def _mark(session: Session, *, deliveries: bool) -> None:
    session.info[_FLAG] = True
    if deliveries:
        session.info[_DELIVERIES] = True


@event.listens_for(OutboxSession, "after_commit")
def _after_commit(session: Session) -> None:
    seen = session.info.pop(_WALLETS_SEEN, None)
    if seen:  # committed: these wallets exist for good (and never change owner or account)
        _WALLETS.setdefault(_engine_of(session), {}).update(seen)
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
    webhooks: Sequence[tuple[str, str]] | None = None,
) -> int:
    """Write an event in the caller's transaction (never commits) and queue a delivery for
    every enabled webhook of ``store_id`` subscribed to ``type``; returns the event id.

    ``webhooks``: the store's enabled webhooks as ``(id, events)`` in id order, when the
    caller already knows them as of this transaction (the store-invoice path remembers them
    with the store and has the store's version checked by its own INSERT); then they are not
    read again.

    ``wallet_id`` routes the event to that wallet's live-update stream (it defaults to the
    subject for wallet events). Events without ``store_id`` reach no webhook."""
    (event_id,) = await emit_many(session, [Event(
        type=type, subject_type=subject_type, subject_id=subject_id, payload=payload,
        store_id=store_id, wallet_id=wallet_id, now=now)], webhooks=webhooks)
    return event_id


@dataclass(frozen=True, slots=True)
class _Hook:
    id: str
    store_id: str
    events: str


@dataclass(frozen=True, slots=True)
class Event:
    """One event for :func:`emit_many` (the arguments of :func:`emit`)."""

    type: str
    subject_type: str
    subject_id: str
    payload: Mapping[str, Any]
    store_id: str | None = None
    wallet_id: str | None = None
    now: datetime | None = None


async def emit_many(session: AsyncSession, events: Sequence[Event], *,
                    balances: bool = False,
                    webhooks: Sequence[tuple[str, str]] | None = None) -> list[int]:
    """:func:`emit` for several events of one operation, in this order: one INSERT for all
    of them (and one webhook lookup and one delivery INSERT if any has a store). With
    ``balances``, the ``wallet.balance_changed`` events the commit would write for the
    ledger moves made so far follow in the same INSERT (for an operation's last events).
    ``webhooks``: as for :func:`emit`, when every event with a store is of that one store."""
    return await session.run_sync(_write, events, balances=balances, webhooks=webhooks)


_INSERT_EVENTS = insert(outbox_t).returning(outbox_t.c.id)


def _write(session: Session, events: Sequence[Event], *, balances: bool = False,
           webhooks: Sequence[tuple[str, str]] | None = None) -> list[int]:
    """:func:`emit_many` on the synchronous session (commit hooks run there)."""
    if not isinstance(session, OutboxSession):
        raise RuntimeError("this session factory was not wired by the composition root "
                           "(satvault.composition.open_sessions): events would not wake "
                           "their readers and balance events would be lost")
    if balances:
        events = [*events, *_balance_events(session)]
    if not events:
        return []
    rows: list[dict[str, Any]] = []
    for e in events:
        if e.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {e.type!r}")
        if e.subject_type not in SUBJECT_TYPES or e.type.split(".", 1)[0] != e.subject_type:
            raise ValueError(f"event {e.type!r} cannot have a subject of type "
                             f"{e.subject_type!r}")
        wallet_id = e.wallet_id
        if e.subject_type == "wallet":
            if wallet_id not in (None, e.subject_id):
                raise ValueError("a wallet event's wallet_id is its subject")
            wallet_id = e.subject_id
        rows.append({"type": e.type, "subject_type": e.subject_type,
                     "subject_id": e.subject_id, "store_id": e.store_id,
                     "wallet_id": wallet_id, "payload": dumps(dict(e.payload)),
                     "created_at": e.now or utcnow()})
    # One INSERT, built once, sent by SQLAlchemy as one multi-row statement for all the rows
    # ("insertmanyvalues"). Ids are handed out in the order of its rows on both databases (the
    # sequence, or SQLite's rowid, advances row by row), whatever order RETURNING lists them
    # in, so sorting them pairs each with its row. (Asking SQLAlchemy to return them in order
    # makes it send one INSERT per row on SQLite.)
    ids = sorted(int(i) for i in session.execute(_INSERT_EVENTS, rows).scalars())
    deliveries: list[dict[str, Any]] = []
    stores = sorted({r["store_id"] for r in rows if r["store_id"] is not None})
    if stores and session.webhook_fanout:
        if webhooks is not None:
            if len(stores) != 1:
                raise ValueError("known webhooks are those of one store")
            hooks: Sequence[Any] = [_Hook(hook_id, stores[0], kinds) for hook_id, kinds in webhooks]
        else:
            hooks = session.execute(
                select(Webhook.id, Webhook.store_id, Webhook.events)
                .where(Webhook.store_id.in_(stores), Webhook.enabled.is_(True))
                .order_by(Webhook.id)
            ).all()
        for event_id, row in zip(ids, rows, strict=True):
            if row["store_id"] is None:
                continue
            body = envelope(event_id, row["type"], row["created_at"], row["payload"])
            deliveries += [
                {"id": new_id("whd"), "webhook_id": hook.id, "event_id": event_id,
                 "event_type": row["type"], "status": DeliveryStatus.PENDING,
                 "attempts": 0,
                 "next_attempt_at": row["created_at"], "request_body": body,
                 "created_at": row["created_at"], "updated_at": row["created_at"]}
                for hook in hooks
                if hook.store_id == row["store_id"] and matches(hook.events.split(), row["type"])]
        if deliveries:
            session.execute(insert(deliveries_t), deliveries)
    _mark(session, deliveries=bool(deliveries))
    return ids


@event.listens_for(OutboxSession, "before_commit")
def _balances_changed(session: Session) -> None:
    """One ``wallet.balance_changed`` per wallet whose ledger account this transaction moved,
    with the balances it commits (the ledger notes the accounts in ``session.info``)."""
    _write(session, _balance_events(session))


@dataclass(frozen=True, slots=True)
class _WalletOf:
    """Who a wallet's ledger account belongs to: a wallet never changes owner, asset or
    account, so once its row was read in a committed transaction this is known for good."""

    id: str
    owner_type: str
    owner_id: str
    asset: str


# Per database (engine): wallet identities by ledger account id, filled after commit.
_WALLETS: WeakKeyDictionary[Any, dict[int, _WalletOf]] = WeakKeyDictionary()
_WALLETS_SEEN = "satvault.events.wallets_seen"


def _engine_of(session: Session) -> Any:
    bind = session.get_bind()
    return getattr(bind, "engine", bind)


def _balance_events(session: Session) -> list[Event]:
    """The ``wallet.balance_changed`` events for the wallets the ledger noted as moved (and
    no longer noted: each is written once). The ledger notes the balances it wrote too, so a
    wallet whose identity is known needs no read at all. A wallet whose frozen sub-balance
    moved (a deposit the risk rules held back, its release or a reorg's reversal) gets one
    too, with ``frozen_msat`` as the wallet API shows it (found from outside: a frozen
    deposit sent no event, and the dashboard's frozen figure never moved)."""
    changed = session.info.pop(BALANCES_CHANGED, None)
    after = session.info.pop(BALANCES_AFTER, None) or {}
    if not changed:
        return []

    known = _WALLETS.get(_engine_of(session), {})
    found: list[tuple[_WalletOf, Any]] = [
        (known[aid], after[aid]) for aid in changed if aid in known and aid in after]
    rest = sorted(aid for aid in changed if aid not in known or aid not in after)
    mains: set[int] = set()  # of ``rest``, the wallets' own accounts
    if rest:
        rows = session.execute(
            select(Wallet, LedgerAccount)
            .join(LedgerAccount, LedgerAccount.id == Wallet.ledger_account_id)
            .where(Wallet.ledger_account_id.in_(rest))
            .execution_options(populate_existing=True)  # the ledger wrote with Core statements
        ).all()
        seen = session.info.setdefault(_WALLETS_SEEN, {})
        for wallet, account in rows:
            who = _WalletOf(wallet.id, wallet.owner_type, wallet.owner_id, wallet.asset)
            seen[account.id] = who
            mains.add(account.id)
            found.append((who, account))
    # The rest are frozen sub-balances (wallet accounts too, never remembered above).
    frozen = _frozen_moved(session, [aid for aid in rest if aid not in mains])
    events = {who.id: wallet_balances(who, balances) for who, balances in found}
    for who, balances, frozen_msat in frozen:
        events.setdefault(who.id, wallet_balances(who, balances))["frozen_msat"] = frozen_msat
    return [Event(type="wallet.balance_changed", subject_type="wallet", subject_id=wallet_id,
                  payload=payload) for wallet_id, payload in sorted(events.items())]


def _frozen_moved(session: Session, accounts: list[int]
                  ) -> list[tuple[_WalletOf, Any, int]]:
    """Of ``accounts``, the frozen sub-balances' wallets: each with its own account and its
    frozen balance (read: rare, off the payment paths)."""
    if not accounts:
        return []
    frozen = aliased(LedgerAccount)
    rows = session.execute(
        select(Wallet, LedgerAccount, frozen)
        .join(LedgerAccount, LedgerAccount.id == Wallet.ledger_account_id)
        .join(frozen, frozen.id == Wallet.frozen_ledger_account_id)
        .where(Wallet.frozen_ledger_account_id.in_(accounts))
        .execution_options(populate_existing=True)).all()
    return [(_WalletOf(w.id, w.owner_type, w.owner_id, w.asset), main,
             int(f.credits_posted - f.debits_posted)) for w, main, f in rows]


@event.listens_for(OutboxSession, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_FLAG, None)
    session.info.pop(_DELIVERIES, None)
    session.info.pop(BALANCES_CHANGED, None)
    session.info.pop(BALANCES_AFTER, None)
    session.info.pop(_WALLETS_SEEN, None)
