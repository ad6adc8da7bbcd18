"""Taking one of our invoices off the node for an internal payment, known to the person's
other payments before the node is asked (migration 0082).

Paying one of our invoices cancels it on the node before the unit of work decides, so that
nobody outside pays it meanwhile; a payment the unit of work then refuses has cost the payee
that BOLT11. Every check made before the node call read without a lock, so a burst of
payments at once each passed them alone (found from outside: 20 at a shop's checkout
invoices from a wallet that could pay one cancelled 19). :func:`claim_take` records the take
under the paying person's lock (PostgreSQL: an advisory lock in ``ln_take``; SQLite: its one
writer) and refuses, before the node is asked, a take that

* the person's budget of refusals forbids (``internal_refusals_per_day``),
* the wallet's balance less its takes in flight does not cover (the money is as good as
  reserved: the same wallet cannot promise it twice),
* finds ``internal_payments_in_flight`` takes of the person in flight (a burst is bounded,
  whatever it would be refused for after), or
* shares the caller's Idempotency-Key, or the invoice, with a take in flight (both: a twin
  of a request in flight, which rides on its take: the node is asked to cancel twice,
  harmlessly, and the key's row decides between them, as before).

A take is in flight while its invoice is ``open`` in the database and for at most
:data:`TAKE_SECONDS`: the unit of work that pays or refuses the payment changes the invoice's
status, and a trigger on ``ln_invoices`` marks the take done with it (migration 0083: no
statement of its own, and a take reads the takes in flight only, through a partial index,
not the person's last two minutes of payments); a process that died in between leaves one
that lapses. A done take keeps the caller's Idempotency-Key for those two minutes: the same
key on another invoice is refused before that invoice leaves the node (found in CI: the
first payment done between a second one's read of the key and its take).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, func, literal, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from satvault.accounts.models import Wallet
from satvault.accounts.persons import person_of
from satvault.config import Settings
from satvault.kernel.clock import utcnow
from satvault.kernel.errors import ConcurrentUpdate
from satvault.kernel.retrying import retrying
from satvault.ledger.core import Result
from satvault.ledger.errors import InsufficientFunds
from satvault.ledger.models import LedgerAccount
from satvault.lightning.errors import PaymentKeyInFlight, PaymentsInFlight, RefusedTooOften
from satvault.lightning.models import InternalRefusal, LnInvoice, LnInvoiceStatus, LnTake

__all__ = ["TAKE_SECONDS", "Taken", "claim_take", "refuse", "refused_too_often",
           "request_digest"]

# How long a take counts as in flight at most (the node's cancel and the unit of work take
# milliseconds; a take older than this belongs to a process that stopped).
TAKE_SECONDS = 120
_REFUSALS_WINDOW = timedelta(hours=24)


class Taken(StrEnum):
    """What :func:`claim_take` found."""

    TAKEN = "taken"            # recorded: ask the node
    NOT_OPEN = "not-open"      # paid, cancelled or reserved meanwhile: the unit of work says
    FUNDS = "funds"            # the balance less the takes in flight does not cover it
    BUSY = "busy"              # the person has the most takes in flight
    SAME_REQUEST = "same-request"  # a take in flight has the caller's Idempotency-Key
    INVOICE_BUSY = "invoice-busy"  # another payment is taking this invoice
    TOO_OFTEN = "too-often"    # the budget of refusals is used
    NO_WALLET = "no-wallet"


def request_digest(owner: str, key: str | None) -> str:
    """What a take keeps of the caller and its Idempotency-Key ("" without one)."""
    if not key:
        return ""
    return hashlib.sha256(f"{owner}\x00{key}".encode()).hexdigest()


# On the driver connection, outside any transaction (the function's statement is its own):
# asyncpg prepares it once per connection. Through a session it cost a fifth more of an
# internal payment's CPU (stop 40's A/B in docs/benchmarks.md).
_PG_TAKE = ("SELECT ln_take($1::varchar, $2::varchar, $3::bigint, $4::varchar, $5::timestamptz, "
            "$6::timestamptz, $7::timestamptz, $8::integer, $9::integer, $10::boolean)")


async def _take_postgres(engine: AsyncEngine, params: dict[str, Any]) -> str:
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        try:
            return str(await driver.fetchval(_PG_TAKE, *params.values()))
        except BaseException:
            # SQLAlchemy did not see this error: the connection is thrown away rather than
            # pooled as a cancellation may have left it (as the ledger's plain path does).
            await conn.invalidate()
            raise


async def claim_take(sessions: async_sessionmaker[AsyncSession], *, payment_hash: str,
                     wallet_id: str, amount_msat: int, settings: Settings, request: str = "",
                     check_balance: bool = True, counts_refusals: bool = True
                     ) -> tuple[Taken, int]:
    """Record that the wallet ``wallet_id`` is taking our invoice ``payment_hash`` off the
    node to pay ``amount_msat``, unless the person's other payments forbid it (above): what
    was found, and the person's refusals in the window when it is :attr:`Taken.TOO_OFTEN`.
    ``counts_refusals`` False: an invoice issued for this payer's request, which the budget
    does not govern."""
    now = utcnow()
    # In the order of ln_take's parameters (the driver call passes them by position).
    params: dict[str, Any] = {
        "hash": payment_hash, "wallet": wallet_id, "amount": amount_msat, "request": request,
        "now": now, "live_since": now - timedelta(seconds=TAKE_SECONDS),
        "refusals_since": now - _REFUSALS_WINDOW,
        "budget": settings.internal_refusals_per_day if counts_refusals else 2**31 - 1,
        "cap": settings.internal_payments_in_flight, "check_balance": check_balance}
    engine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        found = await _take_postgres(engine, params)
    else:
        found = await retrying(sessions, lambda s: _take_sqlite(s, **params))
    name, _, count = found.partition(":")
    return Taken(name), int(count or 0)


async def _take_sqlite(session: AsyncSession, *, hash: str, wallet: str, amount: int,
                       request: str, now: object, live_since: object, refusals_since: object,
                       budget: int, cap: int, check_balance: bool) -> str:
    """``ln_take`` for SQLite, whose transactions here all begin IMMEDIATE: one at a time."""
    # One read of what the checks need (SQLite runs it as quickly as the steps of ln_take).
    t, a = LnTake, LedgerAccount
    me = literal(wallet)
    live = and_(t.person == person_of(me), t.done.is_(False), t.at >= live_since,
                select(LnInvoice.status).where(LnInvoice.payment_hash == t.payment_hash)
                .scalar_subquery() == LnInvoiceStatus.OPEN)
    row = (await session.execute(select(
        person_of(me),
        select(LnInvoice.status).where(LnInvoice.payment_hash == hash).scalar_subquery(),
        select(func.count()).select_from(InternalRefusal).where(
            InternalRefusal.person == person_of(me), InternalRefusal.at >= refusals_since)
        .scalar_subquery(),
        select(func.count()).where(live).scalar_subquery(),
        # The caller's key on another invoice's take, in flight or just done.
        select(func.count()).where(t.request == request, t.payment_hash != hash,
                                   t.at >= live_since).scalar_subquery()
        if request else literal(0),
        select(func.coalesce(func.sum(t.amount_msat), 0)).where(live, t.wallet_id == wallet)
        .scalar_subquery(),
        select(a.credits_posted - a.debits_posted - a.debits_pending)
        .join(Wallet, Wallet.ledger_account_id == a.id).where(Wallet.id == wallet)
        .scalar_subquery(),
        select(func.count()).where(t.payment_hash == hash, t.request == request,
                                   t.at >= live_since).scalar_subquery()
        if request else literal(0)))).one()
    person, status, refusals, in_flight, same, held, free, twin = row
    if person is None:
        return Taken.NO_WALLET.value
    if status != LnInvoiceStatus.OPEN:
        return Taken.NOT_OPEN.value
    if twin:  # the same key and invoice in flight: rides on that take (see ln_take)
        return Taken.TAKEN.value
    if refusals >= budget:
        return f"{Taken.TOO_OFTEN.value}:{refusals}"
    if same:
        return Taken.SAME_REQUEST.value
    if in_flight >= cap:
        return Taken.BUSY.value
    if check_balance and (free or 0) - int(held) < amount:
        return Taken.FUNDS.value
    await session.execute(delete(t).where(t.person == person, t.at < refusals_since))
    stmt = sqlite.insert(t).values(payment_hash=hash, wallet_id=wallet, person=person,
                                   amount_msat=amount, request=request, at=now)
    upsert = stmt.on_conflict_do_update(
        index_elements=[t.payment_hash], set_={
            "wallet_id": stmt.excluded.wallet_id, "person": stmt.excluded.person,
            "amount_msat": stmt.excluded.amount_msat, "request": stmt.excluded.request,
            "at": stmt.excluded.at, "done": False},
        where=t.at < live_since).returning(t.payment_hash)
    done = (await session.execute(upsert)).first()
    return Taken.TAKEN.value if done is not None else Taken.INVOICE_BUSY.value


def refuse(found: Taken, refusals: int, *, payment_hash: str, settings: Settings) -> None:
    """Raise what a payment is told when its take is not :attr:`Taken.TAKEN` (nothing for
    that, and for :attr:`Taken.NOT_OPEN` and :attr:`Taken.NO_WALLET`, which the unit of work
    refuses with its own words)."""
    if found == Taken.FUNDS:
        raise InsufficientFunds(f"internal payment of {payment_hash[:16]}",
                                Result.EXCEEDS_CREDITS)
    if found == Taken.BUSY:
        raise PaymentsInFlight(
            f"{settings.internal_payments_in_flight} payments of this platform's invoices from "
            "this wallet or the others of its owner are being made at once (the most one "
            "person may have); try again in a moment")
    if found == Taken.SAME_REQUEST:
        raise PaymentKeyInFlight("a payment of another invoice with this Idempotency-Key is "
                                 "being made, or was just made")
    if found == Taken.INVOICE_BUSY:
        raise ConcurrentUpdate("this invoice is being paid by another request")
    if found == Taken.TOO_OFTEN:
        raise refused_too_often(refusals, settings)


def refused_too_often(refusals: int, settings: Settings) -> RefusedTooOften:
    return RefusedTooOften(
        f"{refusals} payments of this platform's invoices from this wallet or the others of "
        "its owner (a user's own and their merchants') were refused in the last 24 hours "
        "after the payee's invoice was taken off the node (the most one person may have: "
        f"{settings.internal_refusals_per_day}); they pay none of them until the oldest "
        "refusal is a day old")

