"""Receiving over Lightning: invoices for wallets, crediting them exactly once, the listener.

A settled invoice is credited by one ledger transfer whose id is derived from its payment
hash (``ln:in:<hash>``), under a row lock on the invoice: a repeated notification, a listener
restart or the sweep finding the same invoice again all end in "already credited". The
listener resumes from the node's settle index stored in ``ln_cursors``; a periodic sweep asks
the node about every open invoice, so even a lost notification is only a delay.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, bindparam, column, select, table, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.frozen import DepositScreen, IncomingDeposit
from satvault.accounts.models import Wallet
from satvault.backends.errors import BackendError
from satvault.backends.lightning import Invoice, InvoiceState, LightningBackend
from satvault.db import utcnow
from satvault.kernel.errors import InvalidInput
from satvault.kernel.ids import new_id
from satvault.kernel.retrying import retrying
from satvault.ledger.core import TransferSpec
from satvault.ledger.errors import error_for_batch
from satvault.ledger.platform import ensure_platform_accounts, platform_fee
from satvault.ledger.store import create_transfers
from satvault.lightning.errors import PaymentRefused
from satvault.lightning.models import (
    LnCursor,
    LnInvoice,
    LnInvoiceStatus,
    LnPayment,
    LnPaymentStatus,
)
from satvault.logs import get_logger
from satvault.telemetry import PAYMENTS_RECEIVED

__all__ = ["InvoiceListener", "StoreInvoiceHook", "check_invoice_request", "create_invoice",
           "credit_settled", "expire_invoices", "node_invoice", "refuse_more_than_due",
           "store_invoice"]

log = get_logger(__name__)


async def create_invoice(session: AsyncSession, *, backend: LightningBackend, wallet: Wallet,
                         amount_msat: int | None, memo: str = "",
                         hashed_description: str | None = None, purpose: str = "deposit",
                         expiry_seconds: int = 3600, max_msat: int = 10**13,
                         store_invoice_id: str | None = None, flush: bool = True) -> LnInvoice:
    """Ask the node for an invoice and store it, for callers holding nothing locked. Request
    handlers call :func:`node_invoice` before their unit of work opens and
    :func:`store_invoice` inside it, so no transaction waits on the node."""
    issued = await node_invoice(backend, amount_msat=amount_msat, memo=memo,
                                hashed_description=hashed_description,
                                expiry_seconds=expiry_seconds, max_msat=max_msat)
    digest = (None if hashed_description is None else
              hashlib.sha256(hashed_description.encode("utf-8")).digest())
    return await store_invoice(session, issued, wallet=wallet, memo=memo,
                               description_hash=digest, purpose=purpose,
                               expiry_seconds=expiry_seconds,
                               store_invoice_id=store_invoice_id, flush=flush)


def check_invoice_request(amount_msat: int | None, memo: str, max_msat: int) -> None:
    if amount_msat is not None and not 1 <= amount_msat <= max_msat:
        raise InvalidInput(f"amount_msat must be between 1 and {max_msat}")
    if len(memo.encode("utf-8", "surrogatepass")) > 639:
        raise InvalidInput("the description is limited to 639 bytes of UTF-8 (BOLT11)")


async def node_invoice(backend: LightningBackend, *, amount_msat: int | None, memo: str = "",
                       hashed_description: str | None = None, expiry_seconds: int = 3600,
                       max_msat: int = 10**13) -> Invoice:
    """The node's half: validate, then ask the node (no database involved).
    ``hashed_description``: a text the invoice commits to by its SHA-256 instead of carrying
    it (LNURL-pay metadata); each node is handed the text and hashes it its own way."""
    check_invoice_request(amount_msat, memo, max_msat)
    return await backend.create_invoice(amount_msat, memo=memo,
                                        hashed_description=hashed_description,
                                        expiry=expiry_seconds)


async def store_invoice(session: AsyncSession, inv: Invoice, *, wallet: Wallet,
                        memo: str = "", description_hash: bytes | None = None,
                        purpose: str = "deposit", expiry_seconds: int = 3600,
                        store_invoice_id: str | None = None, flush: bool = True,
                        expires_at: datetime | None = None) -> LnInvoice:
    """The database's half: record an invoice the node issued. ``flush=False`` leaves the
    INSERT to the caller's next flush (one round trip fewer when more rows follow).
    ``expires_at``: when the caller's own deadline is the one to record (a store invoice's
    expiry; the node's BOLT11 lives at least that long), else now + ``expiry_seconds``."""
    amount_msat = inv.amount_msat
    now = utcnow()
    row = LnInvoice(id=new_id("lni"), wallet_id=wallet.id, purpose=purpose,
                    payment_hash=inv.payment_hash, bolt11=inv.bolt11, amount_msat=amount_msat,
                    description=memo,
                    description_hash=description_hash.hex() if description_hash else None,
                    status=LnInvoiceStatus.OPEN, paid_msat=None, internal=False, paid_at=None,
                    store_invoice_id=store_invoice_id,
                    expires_at=expires_at or now + timedelta(seconds=expiry_seconds),
                    created_at=now)
    session.add(row)
    if flush:
        await session.flush()
    return row


# What the composition root passes to bring a store invoice's status up to date in the
# transaction that credited one of its payments (``invoices.service.apply_payment``): the
# session and the store invoice's id.
StoreInvoiceHook = Callable[[AsyncSession, str], Awaitable[object]]


# A payment of one of our invoices from here in any of these states means it is being (or
# was) paid from here: it cannot be paid internally as well.
LIVE_PAYMENTS = (LnPaymentStatus.PENDING, LnPaymentStatus.IN_FLIGHT, LnPaymentStatus.UNKNOWN,
                 LnPaymentStatus.SUCCEEDED, LnPaymentStatus.RETRY)


@lru_cache(maxsize=8)
def _credit_statement(screened: bool, payable: bool, reserved: bool = False) -> Any:
    """The UPDATE that marks an invoice paid, locks it and reads it back, built once per
    shape (the hot path of every internal payment) with bound parameters: ``c_hash``,
    ``c_paid``, ``c_at``, ``c_internal``, and with ``payable`` ``c_payer`` (the paying
    wallet: the invoice must be open, or with ``reserved`` reserved for a held payment, not
    the payer's own, of the paid amount or amountless, and not being paid from here).
    ``screened``: also who is paid, for the deposit rules."""
    def of_wallet(col: Any) -> Any:
        return select(col).where(Wallet.id == LnInvoice.wallet_id).scalar_subquery()
    payment_hash = bindparam("c_hash", type_=LnInvoice.payment_hash.type)
    paid = bindparam("c_paid", type_=LnInvoice.paid_msat.type)
    where: list[ColumnElement[bool]] = [LnInvoice.payment_hash == payment_hash,
                                        LnInvoice.status != LnInvoiceStatus.PAID]
    if payable:
        being_paid = select(LnPayment.id).where(LnPayment.payment_hash == payment_hash,
                                                LnPayment.status.in_(LIVE_PAYMENTS)).exists()
        where += [LnInvoice.status == (LnInvoiceStatus.RESERVED if reserved
                                       else LnInvoiceStatus.OPEN),
                  LnInvoice.wallet_id != bindparam("c_payer", type_=LnInvoice.wallet_id.type),
                  LnInvoice.amount_msat.is_(None) | (LnInvoice.amount_msat == paid),
                  ~being_paid]
    cols = [LnInvoice.id, LnInvoice.store_invoice_id, of_wallet(Wallet.ledger_account_id)]
    if screened:
        cols += [LnInvoice.wallet_id, of_wallet(Wallet.owner_type), of_wallet(Wallet.owner_id)]
    return (update(LnInvoice).where(*where)
            .values(status=LnInvoiceStatus.PAID, paid_msat=paid,
                    paid_at=bindparam("c_at", type_=LnInvoice.paid_at.type),
                    internal=bindparam("c_internal", type_=LnInvoice.internal.type))
            .returning(*cols)
            .execution_options(synchronize_session="fetch"))


async def credit_settled(session: AsyncSession, *, payment_hash: str, paid_msat: int,
                         internal: bool = False, debit_account_id: int | None = None,
                         invoice_fee_bp: int = 0, payable_by: str | None = None,
                         reserved: bool = False,
                         on_store_invoice: StoreInvoiceHook | None = None,
                         deposit_screen: DepositScreen | None = None) -> bool:
    """Credit a paid invoice's wallet once; False if unknown to us or already credited
    (or, with ``payable_by``, the paying wallet of an internal payment, if the invoice is
    not open (``reserved``: not reserved, for a held payment's release), is that wallet's
    own, is of another amount than ``paid_msat`` or is being paid from here).

    The invoice is marked paid, locked and read in one statement (built once:
    :func:`_credit_statement`); a ledger refusal raises and the caller's rollback undoes
    the mark. ``on_store_invoice`` brings the store invoice the
    payment belongs to up to date in this same transaction. ``deposit_screen`` (the risk
    rules, wired by the composition root) screens the deposit first and may send the money to
    the wallet's frozen sub-balance instead (the invoice is paid all the same)."""
    params: dict[str, Any] = {"c_hash": payment_hash, "c_paid": paid_msat, "c_at": utcnow(),
                              "c_internal": internal}
    if payable_by is not None:
        params["c_payer"] = payable_by
    row = (await session.execute(
        _credit_statement(deposit_screen is not None, payable_by is not None, reserved),
        params)
    ).one_or_none()
    if row is None:
        return False
    invoice_id, store_invoice_id, payee_account_id = row[0], row[1], row[2]
    if store_invoice_id and payable_by is not None:  # a held one's release too
        await refuse_more_than_due(session, store_invoice_id, paid_msat, held=reserved)
    platform = await ensure_platform_accounts(session, "BTC")
    if debit_account_id is None:
        debit_account_id = platform.lightning.id
    fee = platform_fee(paid_msat, invoice_fee_bp) if store_invoice_id else 0
    frozen = None
    if deposit_screen is not None:
        frozen = await deposit_screen.screen(session, IncomingDeposit(
            wallet_id=row[3], ledger_account_id=payee_account_id, owner_type=row[4],
            owner_id=row[5], amount_msat=paid_msat,
            rail="internal" if internal else "lightning", subject_id=invoice_id,
            credit_id=f"ln:in:{payment_hash}", receiving=invoice_id, fee_msat=fee,
            store_invoice_id=store_invoice_id))
        if frozen is not None:  # held back by the risk rules: the frozen sub-balance
            payee_account_id = frozen
    specs = [TransferSpec(
        f"ln:in:{payment_hash}", debit_account_id, payee_account_id, paid_msat, "BTC",
        code="ln_internal" if internal else "ln_deposit", ref=invoice_id, linked=fee > 0)]
    if fee:  # a store invoice's platform fee, in the same linked batch
        specs.append(TransferSpec(f"ln:in:{payment_hash}:fee", payee_account_id,
                                  platform.fee_account(payment_hash).id, fee, "BTC",
                                  code="invoice_fee",
                                  ref=store_invoice_id or ""))
    refused = error_for_batch(await create_transfers(session, specs))
    if refused is not None:
        raise refused
    if store_invoice_id and on_store_invoice is not None:
        await on_store_invoice(session, store_invoice_id)
    log.info("ln_invoice_credited", invoice=invoice_id, msat=paid_msat, internal=internal,
             frozen=frozen is not None)
    return True


# The store invoice a BOLT11 may belong to, by name: the invoices package sits above this one
# (it reads Lightning), so its model is not imported here.
_STORE_INVOICES = table("store_invoices", column("id"), column("status"), column("due_msat"),
                        column("seen_msat"))


async def refuse_more_than_due(session: AsyncSession, store_invoice_id: str,
                               paid_msat: int, *, held: bool = False) -> None:
    """An internal payment of a store invoice's BOLT11 pays no more than the store invoice
    still asks for, read under its row lock (found from outside: between a partial payment
    and the follow-up that cancels the first BOLT11, for the whole amount, on the node,
    another wallet of the platform paid that BOLT11, and the customer paid 14,000 sat for a
    10,000 sat invoice; and, held for review, at its release, whatever the invoice's
    status then). Raises
    :class:`PaymentRefused`; the caller's rollback undoes the mark."""
    t = _STORE_INVOICES.c
    status, left = (await session.execute(
        select(t.status, t.due_msat - t.seen_msat).where(t.id == store_invoice_id)
        .with_for_update())).one()
    # ``held``: the release of a payment made in time and held for review; the invoice may
    # have expired meanwhile (found from outside: refused, the merchant lost the sale), it
    # is paid late. Only what it no longer asks for is refused.
    if (status != "new" and not held) or paid_msat > left:
        raise PaymentRefused("this invoice asks for less now (a part of it was paid, or it "
                             "is paid): pay the Lightning invoice it shows now")


async def expire_invoices(session: AsyncSession, payment_hashes: Sequence[str]) -> int:
    """Mark ``expired`` those of ``payment_hashes`` still open five minutes past their expiry:
    invoices the node was just asked about and did not report settled. Only those: an
    invoice expired by the clock alone may have been paid on the node with its notification
    lost, and an expired row is never asked about again (found from outside: a bounded sweep
    expired every open invoice past its time, paid ones it had not looked at included, and
    they were never credited)."""
    if not payment_hashes:
        return 0
    res = await session.execute(update(LnInvoice).where(
        LnInvoice.status == LnInvoiceStatus.OPEN,
        LnInvoice.payment_hash.in_(list(payment_hashes)),
        LnInvoice.expires_at < utcnow() - timedelta(minutes=5)
    ).values(status=LnInvoiceStatus.EXPIRED))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


class InvoiceListener:
    """Follows the node's invoice stream from the stored settle index; sweeps open invoices."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: LightningBackend,
                 *, node: str = "default", invoice_fee_bp: int = 0,
                 on_store_invoice: StoreInvoiceHook | None = None,
                 deposit_screen: DepositScreen | None = None) -> None:
        self.sessions = sessions
        self.on_store_invoice = on_store_invoice
        self.deposit_screen = deposit_screen
        self.backend = backend
        self.node = node
        self.invoice_fee_bp = invoice_fee_bp
        self.credited = 0
        self._sweep_after: str | None = None  # where the next bounded sweep continues
        # For /healthz: completed sweeps, and why the last attempt failed (None once a
        # sweep succeeds again).
        self.runs = 0
        self.last_error: str | None = None

    async def _cursor(self) -> int:
        async with self.sessions() as s:
            row = await s.get(LnCursor, self.node)
            return row.settle_index if row else 0

    async def _advance(self, session: AsyncSession, settle_index: int) -> None:
        """Move the stored settle index forward (never back), creating it on first use: one
        upsert statement."""
        dialect = session.get_bind().dialect.name
        upsert = (pg_insert if dialect == "postgresql" else sqlite_insert)(LnCursor).values(
            node=self.node, settle_index=settle_index, updated_at=utcnow())
        await session.execute(upsert.on_conflict_do_update(
            index_elements=[LnCursor.node],
            set_={"settle_index": upsert.excluded.settle_index,
                  "updated_at": upsert.excluded.updated_at},
            where=LnCursor.settle_index < upsert.excluded.settle_index))

    async def handle(self, payment_hash: str, paid_msat: int, settle_index: int) -> bool:
        async def work(s: AsyncSession) -> bool:
            done = await credit_settled(s, payment_hash=payment_hash, paid_msat=paid_msat,
                                        invoice_fee_bp=self.invoice_fee_bp,
                                        on_store_invoice=self.on_store_invoice,
                                        deposit_screen=self.deposit_screen)
            if settle_index:
                await self._advance(s, settle_index)
            return done
        done = await retrying(self.sessions, work)
        self.credited += int(done)
        if done:
            PAYMENTS_RECEIVED.labels("lightning", "credited").inc()
        return done

    async def listen_once(self) -> None:
        """Consume the stream until it ends or fails (the caller reconnects)."""
        cursor = await self._cursor()
        async for inv in self.backend.subscribe_invoices(settle_index=cursor):
            if inv.state is InvoiceState.SETTLED:
                await self.handle(inv.payment_hash, inv.paid_msat or (inv.amount_msat or 0),
                                  inv.settle_index)

    async def sweep(self, *, limit: int | None = None) -> int:
        """Ask the node about open invoices (catches anything the stream missed). With
        ``limit``, at most that many per call, taking turns through the open invoices (oldest
        first, then from where the previous call stopped): the stream is the primary path and
        resumes from the stored settle index, so the sweep is a safety net whose cost must not
        grow with the number of open invoices."""
        async with self.sessions() as s:
            q = select(LnInvoice.id, LnInvoice.payment_hash).where(
                LnInvoice.status == LnInvoiceStatus.OPEN)
            if limit is not None and self._sweep_after is not None:
                q = q.where(LnInvoice.id > self._sweep_after)
            rows = (await s.execute(q.order_by(LnInvoice.id).limit(limit))).all()
        if limit is not None:
            # A short page means the end was reached: the next call starts from the beginning.
            self._sweep_after = rows[-1].id if len(rows) == limit else None
        hashes = [r.payment_hash for r in rows]
        n = 0
        unpaid: list[str] = []  # asked, and not settled on the node: may expire
        for h in hashes:
            inv = await self.backend.lookup_invoice(h)
            if inv is not None and inv.state is InvoiceState.SETTLED:
                n += int(await self.handle(h, inv.paid_msat or (inv.amount_msat or 0), 0))
            else:
                unpaid.append(h)
        await retrying(self.sessions, lambda s: expire_invoices(s, unpaid))
        return n

    async def _sweep_ok(self, limit: int) -> None:
        await self.sweep(limit=limit)
        self.runs += 1
        self.last_error = None

    async def run(self, *, sweep_every: float = 30.0, sweep_limit: int = 200) -> None:
        delay = 0.5
        stream: asyncio.Task[None] | None = None
        while True:
            try:
                await self._sweep_ok(sweep_limit)
                stream = asyncio.create_task(self.listen_once())
                while not stream.done():
                    await asyncio.wait({stream}, timeout=sweep_every)
                    if not stream.done():
                        await self._sweep_ok(sweep_limit)
                stream.result()
                delay = 0.5
            except asyncio.CancelledError:
                if stream is not None:
                    stream.cancel()
                raise
            except BackendError as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("ln_listener_reconnect", error=str(exc), in_seconds=delay)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("ln_listener_failed")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
