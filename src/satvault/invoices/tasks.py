"""Background work for invoices: keep every live invoice's status in step with its payments.

Looking at every open invoice on every tick costs O(open invoices) transactions per tick, which
grows with the shop's traffic and, on SQLite, queues behind the API's writes. The
:class:`InvoiceRefresher` therefore looks only at invoices that can have changed:

* those whose ``next_check_at`` has come (the clock alone can move an invoice only at its
  expiry and at the end of its monitoring window);
* those with an on-chain payment (``onchain_payments.updated_at``) or a paid Lightning invoice
  (``ln_invoices.paid_at``) changed since its previous tick, less a safety ``margin`` so a
  transaction that stamped its row before that tick but committed after it is still seen.

Refreshing an invoice that did not change writes nothing, so a wide margin costs little. A full
sweep (:func:`refresh_open_invoices`) runs at start-up and every ``full_sweep_every`` as the
backstop, for instance after a transaction that ran longer than the margin.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import CompoundSelect, select, union
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.errors import BackendError
from satvault.backends.lightning import LightningBackend
from satvault.config import Settings
from satvault.db import utcnow
from satvault.invoices.models import StoreInvoice
from satvault.invoices.service import follow_up_of, record_follow_up, refresh
from satvault.invoices.status import Status
from satvault.kernel.retrying import retrying
from satvault.lightning.invoices import node_invoice
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from satvault.logs import get_logger
from satvault.onchain.models import OnchainPayment

__all__ = ["InvoiceRefresher", "lightning_follow_up", "refresh_open_invoices"]

log = get_logger(__name__)


async def _one(session: AsyncSession, *, invoice_id: str, settings: Settings
               ) -> tuple[bool, bool]:
    """(changed, the node may have something to do for it). A payment's crediting
    transaction sets the status itself (``apply_payment``), so an invoice this sweep finds
    unchanged may still need its follow-up: settled or processing (cancel the other BOLT11s;
    found from outside: a Lightning payment of the rest made the invoice processing in its
    own transaction, and the first BOLT11 stayed payable) or partly paid (a BOLT11 for the
    rest). :func:`follow_up_of` checks, so repeating it is harmless."""
    inv = await session.get(StoreInvoice, invoice_id, with_for_update=True)
    if inv is None:
        return False, False
    changed = await refresh(session, inv, settings=settings)
    pending = inv.status in (Status.SETTLED, Status.PROCESSING) \
        or (inv.status == Status.NEW and inv.seen_msat > 0)
    return changed, changed or pending


async def lightning_follow_up(sessions: async_sessionmaker[AsyncSession], invoice_id: str, *,
                              settings: Settings, lightning: LightningBackend | None) -> None:
    """After an invoice changed and committed: read what the node must do, do it with no
    transaction open, then record the answer in a short one."""
    if lightning is None:
        return
    async with sessions() as s:
        todo = await follow_up_of(s, invoice_id)
    cancelled: list[str] = []
    for payment_hash in todo.cancel:
        try:
            await lightning.cancel_invoice(payment_hash)
            cancelled.append(payment_hash)
        except BackendError as exc:  # stays open; an outside payment is still credited
            log.warning("ln_invoice_cancel_failed", payment_hash=payment_hash, error=str(exc))
    remainder, seconds = None, todo.remainder_seconds()  # after the cancels: what is left now
    if seconds:
        try:
            remainder = await node_invoice(
                lightning, amount_msat=todo.remainder_msat, memo=f"Invoice {invoice_id}",
                expiry_seconds=seconds, max_msat=settings.ln_max_payment_msat)
        except BackendError as exc:  # the address takes the rest; a later tick asks again
            log.warning("ln_remainder_invoice_failed", invoice=invoice_id, error=str(exc))
    if cancelled or remainder is not None:
        await retrying(sessions, partial(record_follow_up, invoice_id=invoice_id,
                                         cancelled=cancelled, remainder=remainder,
                                         expiry_seconds=seconds))


async def _refresh_each(sessions: async_sessionmaker[AsyncSession], ids: Iterable[str],
                        settings: Settings, lightning: LightningBackend | None) -> int:
    changed = 0
    for invoice_id in sorted(set(ids)):
        moved, follow = await retrying(sessions, partial(_one, invoice_id=invoice_id,
                                                         settings=settings))
        changed += int(moved)
        if follow:
            await lightning_follow_up(sessions, invoice_id, settings=settings,
                                      lightning=lightning)
    return changed


async def live_invoice_ids(session: AsyncSession, *, now: datetime,
                           monitoring: timedelta) -> list[str]:
    """Every invoice a payment or the clock could still move: open ones, and expired or
    settled ones inside the monitoring window (a late payment, a reorg). Marked ones too: a
    mark fixes the status, but what the invoice received still follows its payments."""
    since = now - monitoring
    return list((await session.execute(select(StoreInvoice.id).where(
        StoreInvoice.status.in_((Status.NEW, Status.PROCESSING))
        | ((StoreInvoice.status == Status.EXPIRED) & (StoreInvoice.expires_at > since))
        | ((StoreInvoice.status == Status.SETTLED) & (StoreInvoice.settled_at > since))
    ))).scalars().all())


async def stranded_ids(session: AsyncSession, *, now: datetime) -> list[str]:
    """Invoices nobody may pay any more (settled, processing or voided) that still have a
    payable BOLT11 on the node: their follow-up did not happen (the process died between the
    commit and the node call, or the node failed the cancel; found from outside: a voided
    invoice kept its BOLT11 payable for good, as the sweep never looks at ``invalid`` ones).
    Read from the few open BOLT11s (``ix_ln_invoices_open``: status, expiry), whatever the
    invoices' age."""
    return [r for r in (await session.execute(
        select(LnInvoice.store_invoice_id).distinct()
        .join(StoreInvoice, StoreInvoice.id == LnInvoice.store_invoice_id)
        .where(LnInvoice.status == LnInvoiceStatus.OPEN, LnInvoice.expires_at > now,
               StoreInvoice.status.in_((Status.SETTLED, Status.PROCESSING, Status.INVALID)))
    )).scalars().all() if r is not None]


async def _sweep(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                 lightning: LightningBackend | None, *, now: datetime) -> tuple[int, int]:
    """(how many changed, how many were looked at)."""
    async with sessions() as s:
        ids = await live_invoice_ids(s, now=now, monitoring=timedelta(
            minutes=settings.invoice_monitoring_minutes))
        stranded = set(await stranded_ids(s, now=now)) - set(ids)
    changed = await _refresh_each(sessions, ids, settings, lightning)
    for invoice_id in sorted(stranded):  # nothing to refresh: only the node's half is left
        await lightning_follow_up(sessions, invoice_id, settings=settings, lightning=lightning)
    return changed, len(ids) + len(stranded)


async def refresh_open_invoices(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                                lightning: LightningBackend | None) -> int:
    """The full sweep, O(live invoices): refresh every live invoice, and finish the
    follow-up of any that still has a BOLT11 payable though nobody may pay it; returns how
    many changed."""
    changed, _ = await _sweep(sessions, settings, lightning, now=utcnow())
    return changed


async def due_invoice_ids(session: AsyncSession, *, now: datetime,
                          payments_since: datetime) -> list[str]:
    """Invoices whose deadline has come or whose payments changed since ``payments_since``:
    three indexed lookups, however many invoices are open."""
    q: CompoundSelect[Any] = union(
        select(StoreInvoice.id).where(StoreInvoice.next_check_at <= now),
        select(StoreInvoice.id).join(
            OnchainPayment, OnchainPayment.request_id == StoreInvoice.deposit_id
        ).where(OnchainPayment.updated_at >= payments_since),
        select(LnInvoice.store_invoice_id).where(
            LnInvoice.store_invoice_id.is_not(None), LnInvoice.paid_at >= payments_since),
    )
    return [r for r in (await session.execute(q)).scalars().all() if r is not None]


class InvoiceRefresher:
    """The invoice worker's tick: incremental, with a periodic full sweep (module docstring)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings,
                 lightning: LightningBackend | None, *,
                 margin: timedelta = timedelta(seconds=120),
                 full_sweep_every: timedelta = timedelta(minutes=10)) -> None:
        self.sessions = sessions
        self.settings = settings
        self.lightning = lightning
        self.margin = margin
        self.full_sweep_every = full_sweep_every
        self._last_tick: datetime | None = None
        self._last_sweep: datetime | None = None
        self.checked = 0  # invoices looked at by the last step (for tests and logs)

    async def step(self) -> int:
        """One tick; returns how many invoices changed."""
        now = utcnow()
        since, self._last_tick = self._last_tick, now
        if since is None or self._last_sweep is None \
                or now - self._last_sweep >= self.full_sweep_every:
            self._last_sweep = now
            changed, self.checked = await _sweep(self.sessions, self.settings,
                                                 self.lightning, now=now)
            return changed
        async with self.sessions() as s:
            ids = await due_invoice_ids(s, now=now, payments_since=since - self.margin)
        self.checked = len(ids)
        return await _refresh_each(self.sessions, ids, self.settings, self.lightning)
