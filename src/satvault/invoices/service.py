"""Store invoices: creating them (amount, rate locked at creation, payment destinations),
following their payments, and the merchant's own marks.

An invoice is paid through the machinery the wallets already use: an on-chain deposit request
(a fresh address watched by the chain watcher) and a Lightning invoice (credited by the
listener), both crediting the merchant's wallet. :func:`refresh` recomputes the status from
those payments; when it changes, an event is written in the same transaction (webhooks and
live updates read it from the outbox). After a partial on-chain payment a new Lightning invoice
for the remainder is issued, so one scan of the unified BIP21 QR always pays the rest.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    Table,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import Store, Wallet
from satvault.accounts.service import ensure_wallet
from satvault.amounts import InvalidAmount, parse_decimal
from satvault.audit.service import record
from satvault.backends.lightning import Invoice, LightningBackend
from satvault.config import Settings
from satvault.db import utcnow
from satvault.events.models import Webhook
from satvault.invoices.models import StoreInvoice
from satvault.invoices.status import (
    Additional,
    InvoiceFacts,
    Status,
    closed,
    decide,
    next_deadline,
    threshold_msat,
)
from satvault.kernel.errors import InvalidInput, NotFound
from satvault.kernel.ids import new_id
from satvault.lightning.invoices import node_invoice, store_invoice
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from satvault.logs import get_logger
from satvault.onchain.bip21 import make_bip21, msat_to_sat_ceil
from satvault.onchain.deposits import open_deposit
from satvault.onchain.models import (
    CreditState,
    DepositRequest,
    OnchainAddress,
    OnchainPayment,
    OnchainPaymentStatus,
)
from satvault.payouts.service import DUST_SAT
from satvault.rates.base import Rate, currency_scale
from satvault.rates.convert import apply_spread, fiat_to_msat
from satvault.rates.service import RateService, comparing_rate_service

__all__ = [
    "Destinations",
    "FollowUp",
    "InvoiceRequest",
    "InvoiceStore",
    "Quote",
    "StoreChanged",
    "apply_payment",
    "check_redirect_url",
    "create_store_invoice",
    "destinations",
    "destinations_of",
    "follow_up_of",
    "get_invoice",
    "invoice_store",
    "mark_invoice",
    "quote_store_invoice",
    "rate_for",
    "received_msat",
    "record_follow_up",
    "refresh",
]

log = get_logger(__name__)
MSAT_PER_BTC = 10**11
MAX_MSAT = 21_000_000 * MSAT_PER_BTC
METHODS = ("onchain", "lightning")


class StoreChanged(Exception):
    """The store's settings changed since the quote read them: the invoice was not created,
    and a new quote must be made with the settings now in force."""


# What an invoice needs of its store, remembered per process: (merchant, default currency,
# speed policy, spread, enabled webhooks as (id, events)). A store never changes merchant, so
# the ownership check holds; the settings and webhooks may change, and create_store_invoice
# inserts the invoice only if the store still has the ones remembered (checked by the INSERT
# itself), so a stale entry costs one more quote, never an invoice priced with old settings
# or an event fanned out to yesterday's webhooks.
Hooks = tuple[tuple[str, str], ...]
_stores: OrderedDict[str, tuple[str, str, int, int, Hooks]] = OrderedDict()
_STORES_MAX = 10_000
# merchant id → its wallet id: a wallet never changes owner and is never deleted.
_merchant_wallets: dict[str, str] = {}


def check_redirect_url(url: str) -> None:
    """An invoice's ``redirect_url``, the public checkout page's "Back to the shop" link: an
    http(s) URL with a host and no credentials before it (found from outside:
    ``https://shop.example@evil.example`` reads as the shop's and leads to evil.example, a
    phishing link under the platform's name; a webhook's URL refuses credentials too). A
    backslash in the authority is refused as well: browsers read it as a slash, Python does
    not, so what the two call the host could differ."""
    if not url.startswith(("https://", "http://")):
        raise InvalidInput("redirect_url must be an http(s) URL")
    authority = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" in authority or "\\" in authority:
        raise InvalidInput("redirect_url must not hold credentials (user:password@ before "
                           "the host): the checkout page shows it as a link back to the shop")
    if not authority or authority.startswith(":"):
        raise InvalidInput("redirect_url has no host")


@dataclass(frozen=True, slots=True)
class InvoiceStore:
    """The store as an invoice needs it: a detached copy, its enabled webhooks, and whether it
    came from memory (a quote refused with it is made again with a fresh read: the settings it
    was refused for may be gone)."""

    store: Store
    webhooks: Hooks
    remembered: bool


async def invoice_store(sessions: async_sessionmaker[AsyncSession], store_id: str, *,
                        fresh: bool = False) -> InvoiceStore | None:
    """The store and its webhooks, as an invoice needs them (no statement when remembered)."""
    hit = None if fresh else _stores.get(store_id)
    remembered = hit is not None
    if hit is None:
        async with sessions() as s:
            found = await s.get(Store, store_id)
            hooks = () if found is None else tuple(
                (hook_id, events) for hook_id, events in await s.execute(
                    select(Webhook.id, Webhook.events)
                    .where(Webhook.store_id == store_id, Webhook.enabled.is_(True))
                    .order_by(Webhook.id)))
        if found is None:
            _stores.pop(store_id, None)
            return None
        hit = (found.merchant_id, found.default_currency, found.speed_policy, found.spread_bp,
               hooks)
        _stores[store_id] = hit
        while len(_stores) > _STORES_MAX:
            _stores.popitem(last=False)
    merchant_id, currency, speed, spread, hooks = hit
    return InvoiceStore(Store(id=store_id, merchant_id=merchant_id, default_currency=currency,
                              speed_policy=speed, spread_bp=spread), hooks, remembered)


async def _merchant_wallet(session: AsyncSession, merchant_id: str) -> Wallet:
    """The merchant's wallet (only its ids are read), from memory once it was seen committed."""
    wallet_id = _merchant_wallets.get(merchant_id)
    if wallet_id is None:
        wallet_id = (await session.execute(select(Wallet.id).where(
            Wallet.owner_type == "merchant", Wallet.owner_id == merchant_id,
            Wallet.asset == "BTC"))).scalar_one_or_none()
        if wallet_id is None:  # the first invoice: created with this transaction
            return await ensure_wallet(session, owner_type="merchant", owner_id=merchant_id)
        if len(_merchant_wallets) >= _STORES_MAX:
            _merchant_wallets.clear()
        _merchant_wallets[merchant_id] = wallet_id
    return Wallet(id=wallet_id, owner_type="merchant", owner_id=merchant_id, asset="BTC")


def _same_webhooks(store_id: Any, hooks: Sequence[tuple[Any, Any]]) -> Any:
    """True in SQL while the store's enabled webhooks are exactly ``hooks``."""
    enabled = (Webhook.store_id == store_id) & Webhook.enabled.is_(True)
    known = or_(false(), *((Webhook.id == hook_id) & (Webhook.events == events)
                           for hook_id, events in hooks))
    others = ~exists().where(enabled, ~known)
    if not hooks:
        return others
    count = select(func.count()).select_from(Webhook).where(enabled).scalar_subquery()
    return others & (count == len(hooks))


@lru_cache(maxsize=32)
def _insert_statement(hook_count: int) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """The guarded INSERT … SELECT for a store with ``hook_count`` enabled webhooks, built
    once (the hot path of store invoices: building and hashing it anew cost more CPU than
    running it); every value is a bound parameter. Returns the statement and the
    (parameter, attribute) names of the invoice's columns."""
    table = cast(Table, StoreInvoice.__table__)
    names, values, params = [], [], []
    for attr in inspect(StoreInvoice).column_attrs:
        column = attr.columns[0]
        names.append(column.name)
        values.append(bindparam(f"v_{attr.key}", type_=column.type))
        params.append((f"v_{attr.key}", attr.key))
    store_id = bindparam("s_id", type_=Store.id.type)
    hooks = [(bindparam(f"h_id_{i}", type_=Webhook.id.type),
              bindparam(f"h_events_{i}", type_=Webhook.events.type))
             for i in range(hook_count)]
    statement = insert(table).from_select(names, select(*values).where(
        Store.id == store_id, Store.merchant_id == bindparam("s_merchant"),
        Store.default_currency == bindparam("s_currency"),
        Store.speed_policy == bindparam("s_speed"), Store.spread_bp == bindparam("s_spread"),
        _same_webhooks(store_id, hooks)))
    return statement, tuple(params)


async def _insert_if_store_unchanged(session: AsyncSession, inv: StoreInvoice,
                                     store: Store, hooks: Hooks) -> None:
    """INSERT the invoice … SELECT from its store row with the settings the quote used and
    the webhooks the event will be fanned out to: no row, no invoice (StoreChanged)."""
    statement, columns = _insert_statement(len(hooks))
    params: dict[str, Any] = {name: getattr(inv, key) for name, key in columns}
    params.update(s_id=store.id, s_merchant=store.merchant_id,
                  s_currency=store.default_currency, s_speed=store.speed_policy,
                  s_spread=store.spread_bp)
    for i, (hook_id, events) in enumerate(hooks):
        params[f"h_id_{i}"], params[f"h_events_{i}"] = hook_id, events
    done = await session.execute(statement, params)
    if done.rowcount != 1:  # type: ignore[attr-defined]
        _stores.pop(store.id, None)
        raise StoreChanged(f"the settings of store {store.id!r} changed")


@dataclass(frozen=True, slots=True)
class InvoiceRequest:
    amount: str
    currency: str = "BTC"
    order_id: str | None = None
    metadata: dict[str, Any] | None = None
    expiration_minutes: int = 15
    payment_methods: tuple[str, ...] = METHODS
    speed_policy: int | None = None
    payment_tolerance_percent: Decimal = Decimal(0)
    redirect_url: str | None = None


def _units(text: str, places: int, what: str) -> int:
    """The amount in ``10**-places`` units, through the one strict parser (no rounding)."""
    try:
        value = parse_decimal(text, places=places)
    except InvalidAmount as exc:
        raise InvalidInput(f"{what}: {exc}") from exc
    if value <= 0:
        raise InvalidInput("amount must be a positive number")
    return value


async def rate_for(settings: Settings, currency: str, *, rates: RateService | None) -> Rate:
    """The rate an invoice in ``currency`` is priced at now, from ``rates`` (the runtime's),
    or without a runtime from a service built for this once: the sources are compared, but
    no rate is remembered to bound the next one's movement."""
    service = rates or comparing_rate_service(settings)
    try:
        return await service.rate(currency)
    finally:
        if rates is None:
            await service.close()


async def _price(settings: Settings, currency: str, amount: str, *,
                 rates: RateService | None, spread_bp: int
                 ) -> tuple[int, int, int | None, str | None, datetime | None]:
    """(amount_minor, due_msat, rate, source, at) — the rate is locked here, once."""
    if currency == "BTC":
        msat = _units(amount, 11, "a BTC amount")
        return msat, msat, None, None, None
    if currency == "SATS":
        msat = _units(amount, 3, "a sats amount")
        return msat, msat, None, None, None
    minor = _units(amount, currency_scale(currency), f"a {currency} amount")
    rate = await rate_for(settings, currency, rates=rates)
    if spread_bp:
        rate = apply_spread(rate, spread_bp)
    return minor, fiat_to_msat(minor, rate), rate.minor_per_btc, rate.source, rate.fetched_at


@dataclass(frozen=True, slots=True)
class Quote:
    """Everything about a new invoice that needs the outside world (the rate, the node's
    BOLT11), worked out before the unit of work opens."""

    id: str
    currency: str
    methods: tuple[str, ...]
    speed: int
    tolerance_bp: int
    metadata: str
    minor: int
    due_msat: int
    rate: int | None
    rate_source: str | None
    rate_at: datetime | None
    created_at: datetime
    expires_at: datetime
    ln: Invoice | None


# The least an on-chain payment to a deposit address (P2WPKH) can be: Bitcoin Core's dust
# limit for that output at its default dust relay fee.
ONCHAIN_MIN_SAT = DUST_SAT["p2wpkh"]


async def quote_store_invoice(*, store: Store, request: InvoiceRequest, settings: Settings,
                              lightning: LightningBackend | None,
                              rates: RateService | None = None) -> Quote:
    """Validate the request, lock the rate and ask the node for the BOLT11, with no
    transaction open (a slow rate source or node must not hold a lock or SQLite's writer)."""
    currency = request.currency.strip().upper()
    methods = tuple(dict.fromkeys(request.payment_methods))
    if not methods or any(m not in METHODS for m in methods):
        raise InvalidInput("payment_methods must be a non-empty subset of onchain, lightning")
    if "lightning" in methods and lightning is None:
        raise InvalidInput("Lightning is not configured on this platform")
    if not 1 <= request.expiration_minutes <= 7 * 24 * 60:
        raise InvalidInput("expiration_minutes must be between 1 and 10080")
    speed = store.speed_policy if request.speed_policy is None else request.speed_policy
    if speed not in (0, 1, 2, 6):
        raise InvalidInput("speed_policy must be 0, 1, 2 or 6 confirmations")
    tolerance = request.payment_tolerance_percent
    if not Decimal(0) <= tolerance <= Decimal(50):
        raise InvalidInput("payment_tolerance_percent must be between 0 and 50")
    if (tolerance * 100) % 1:  # kept in basis points: "0.015" would have been 1 bp silently
        raise InvalidInput("payment_tolerance_percent has at most 2 decimal places")
    if request.redirect_url:
        check_redirect_url(request.redirect_url)
    try:  # Python reads NaN, Infinity and 1e999 (as infinity); JSON cannot carry them
        metadata = json.dumps(request.metadata or {}, sort_keys=True, allow_nan=False)
    except ValueError as exc:
        raise InvalidInput("metadata holds a number JSON cannot carry (NaN or infinity)"
                           ) from exc
    try:  # a lone surrogate would be stored escaped and fail every later read as UTF-8
        json.dumps(request.metadata or {}, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput("metadata holds text that is not valid Unicode") from exc
    if len(metadata) > 16_000:
        raise InvalidInput("metadata is limited to 16 kB of JSON")
    minor, due, rate, source, at = await _price(settings, currency, request.amount,
                                                rates=rates, spread_bp=store.spread_bp)
    if due < 1000:
        raise InvalidInput("the amount is below 1 sat")
    if due > MAX_MSAT or minor > MAX_MSAT:
        raise InvalidInput("the amount is above 21 million BTC")
    if "onchain" in methods and msat_to_sat_ceil(due) < ONCHAIN_MIN_SAT:
        # An output that small is dust, which no node relays (found from outside: a 0.01 USD
        # invoice asked for 17 sat on-chain, which nobody could pay).
        if "lightning" not in methods:
            raise InvalidInput(
                f"this invoice is {msat_to_sat_ceil(due)} sat, below the {ONCHAIN_MIN_SAT} "
                "sat an on-chain output can carry: ask for payment_methods [\"lightning\"]")
        methods = tuple(m for m in methods if m != "onchain")
    invoice_id = new_id("inv")
    now = utcnow()
    expires = now + timedelta(minutes=request.expiration_minutes)
    ln = None
    if "lightning" in methods and lightning is not None:
        if due > settings.ln_max_payment_msat:
            # Said as the invoice's own limit (found from outside: the node's check answered
            # "amount_msat must be between …", a field the request does not have).
            raise InvalidInput(
                f"this invoice is {due} msat, above the {settings.ln_max_payment_msat} msat "
                "Lightning takes per payment: ask for payment_methods [\"onchain\"]")
        ln = await node_invoice(lightning, amount_msat=due, memo=f"Invoice {invoice_id}",
                                expiry_seconds=max(60, request.expiration_minutes * 60),
                                max_msat=settings.ln_max_payment_msat)
    return Quote(invoice_id, currency, methods, speed, int(tolerance * 100), metadata, minor,
                 due, rate, source, at, now, expires, ln)


async def create_store_invoice(session: AsyncSession, *, store: Store, request: InvoiceRequest,
                               settings: Settings, quote: Quote, webhooks: Hooks | None = None
                               ) -> tuple[StoreInvoice, dict[str, Any]]:
    """Create the invoice from its :func:`quote_store_invoice`; returns it with its payload
    (the ``invoice.created`` event's data, which is also the API's answer). ``store`` may be
    a remembered copy, with its ``webhooks`` (:func:`invoice_store`): if the store's settings
    or webhooks are no longer those, nothing is created and :class:`StoreChanged` says to
    quote again. Without ``webhooks`` they are read."""
    wallet = await _merchant_wallet(session, store.merchant_id)
    now = quote.created_at
    inv = StoreInvoice(
        id=quote.id, store_id=store.id, wallet_id=wallet.id, status=Status.NEW,
        additional_status=Additional.NONE, currency=quote.currency,
        amount=request.amount, amount_minor=quote.minor, due_msat=quote.due_msat,
        rate_minor_per_btc=quote.rate, rate_source=quote.rate_source, rate_at=quote.rate_at,
        order_id=request.order_id, metadata_json=quote.metadata,
        payment_methods=",".join(quote.methods), speed_policy=quote.speed,
        tolerance_bp=quote.tolerance_bp, redirect_url=request.redirect_url, deposit_id=None,
        confirmed_msat=0, seen_msat=0, full_seen_at=None, expires_at=quote.expires_at,
        created_at=now, updated_at=now, settled_at=None)
    inv.next_check_at = inv.expires_at
    ln = address = None
    if quote.ln is not None:
        ln = await store_invoice(session, quote.ln, wallet=wallet, memo=f"Invoice {inv.id}",
                                 purpose="invoice",
                                 expiry_seconds=int((quote.expires_at - now).total_seconds()),
                                 store_invoice_id=inv.id, flush=False,
                                 expires_at=quote.expires_at)
    if "onchain" in quote.methods:
        # A pooled address, claimed with one statement (no shared row is locked).
        dep = await open_deposit(session, wallet=wallet, settings=settings,
                                 amount_msat=quote.due_msat, description=f"Invoice {inv.id}",
                                 confirmations=quote.speed, expires_at=inv.expires_at,
                                 store_invoice_id=inv.id)
        inv.deposit_id = dep.id
        address = dep.address
    await session.flush()  # the deposit row first: the invoice's foreign key needs it
    # Inserted complete (no UPDATE to link it afterwards), and only if the store still has
    # the settings the quote used.
    if webhooks is None:
        webhooks = tuple((i, e) for i, e in await session.execute(
            select(Webhook.id, Webhook.events)
            .where(Webhook.store_id == store.id, Webhook.enabled.is_(True))
            .order_by(Webhook.id)))
    await _insert_if_store_unchanged(session, inv, store, webhooks)
    known = _destinations(inv, address, ln)
    return inv, await _emit(session, inv, "invoice.created", known=known, webhooks=webhooks)


@dataclass(frozen=True, slots=True)
class Destinations:
    address: str | None
    onchain_due_sat: int | None
    bolt11: str | None
    bip21: str | None
    lightning_due_msat: int | None
    # A payment of one of the invoice's BOLT11s is held for review (that BOLT11 ``reserved``
    # for it, off the node): nothing is to be paid until its case decides.
    under_review: bool = False


def _due_msat(inv: StoreInvoice) -> int:
    return max(0, inv.due_msat - inv.seen_msat)


async def destinations(session: AsyncSession, inv: StoreInvoice) -> Destinations:
    """Where to pay what is still due: the address, the newest open Lightning invoice for
    exactly that amount, and one BIP21 URI carrying both
    (``bitcoin:ADDR?amount=…&lightning=BOLT11``); nowhere while a payment is under review
    (a reserved BOLT11, read first by the same statement)."""
    address = None
    if inv.deposit_id:
        dep = await session.get(DepositRequest, inv.deposit_id)
        if dep is not None and dep.address_id is not None:
            addr = await session.get(OnchainAddress, dep.address_id)
            address = addr.address if addr else None
    reserved = LnInvoice.status == LnInvoiceStatus.RESERVED
    ln = (await session.execute(select(LnInvoice).where(
        LnInvoice.store_invoice_id == inv.id,
        reserved | ((LnInvoice.status == LnInvoiceStatus.OPEN)
                    & (LnInvoice.amount_msat == _due_msat(inv))),
    ).order_by(case((reserved, 0), else_=1), LnInvoice.created_at.desc()).limit(1))
    ).scalar_one_or_none()
    return _destinations(inv, address, ln)


async def destinations_of(session: AsyncSession, invoices: Sequence[StoreInvoice]
                          ) -> dict[str, Destinations]:
    """:func:`destinations` for a page of invoices in two statements, whatever its length
    (one for the addresses, one for the open Lightning invoices)."""
    if not invoices:
        return {}
    deposit_ids = [i.deposit_id for i in invoices if i.deposit_id]
    addresses: dict[str, str] = {}
    if deposit_ids:
        rows = await session.execute(
            select(DepositRequest.id, OnchainAddress.address)
            .join(OnchainAddress, OnchainAddress.id == DepositRequest.address_id)
            .where(DepositRequest.id.in_(deposit_ids)))
        addresses = {dep_id: address for dep_id, address in rows}
    newest: dict[str, LnInvoice] = {}
    reserved: dict[str, LnInvoice] = {}
    due = {i.id: _due_msat(i) for i in invoices}
    lns = (await session.execute(select(LnInvoice).where(
        LnInvoice.store_invoice_id.in_([i.id for i in invoices]),
        LnInvoice.status.in_((LnInvoiceStatus.OPEN, LnInvoiceStatus.RESERVED))
    ).order_by(LnInvoice.created_at.desc()))).scalars()
    for ln in lns:
        assert ln.store_invoice_id is not None
        if ln.status == LnInvoiceStatus.RESERVED:
            reserved.setdefault(ln.store_invoice_id, ln)
        elif ln.amount_msat == due[ln.store_invoice_id]:
            newest.setdefault(ln.store_invoice_id, ln)
    return {i.id: _destinations(i, addresses.get(i.deposit_id or ""),
                                reserved.get(i.id) or newest.get(i.id))
            for i in invoices}


def _destinations(inv: StoreInvoice, address: str | None, ln: LnInvoice | None
                  ) -> Destinations:
    if ln is not None and ln.status == LnInvoiceStatus.RESERVED:
        # Its payment, held for review, covers it until the case decides: paying the address
        # or another BOLT11 meanwhile would pay twice once the case releases it.
        return Destinations(None, None, None, None, None, under_review=True)
    # Nothing is asked for once the invoice is no longer awaiting payment: seen in full (or
    # within its tolerance) and confirming, settled, expired, invalid (found from outside: an
    # invoice settled within its tolerance still offered a BIP21 for the shortfall).
    remaining = _due_msat(inv) if inv.status == Status.NEW else 0
    # Only a BOLT11 for exactly what is due: an older one (the first, for the whole amount,
    # after a partial on-chain payment whose remainder BOLT11 the node could not issue, or
    # that was below 1 sat) would have a unified QR make the payer pay it all again.
    bolt11 = ln.bolt11 if ln is not None and remaining and ln.amount_msat == remaining \
        else None
    # Never less than an output can carry: a remainder below dust could not be paid at all
    # (found from outside); the customer pays a little over instead.
    sat = max(msat_to_sat_ceil(remaining), ONCHAIN_MIN_SAT) if remaining else None
    # No label: every character makes the unified QR denser and harder to scan on a phone.
    bip21 = make_bip21(address, amount_sat=sat, lightning=bolt11) if address and remaining \
        else None
    return Destinations(address, sat, bolt11, bip21, ln.amount_msat if bolt11 and ln else None)


async def _payments(session: AsyncSession, inv: StoreInvoice
                    ) -> tuple[int, int, datetime | None]:
    """(credited msat, seen msat, when the seen total first reached the threshold)."""
    events: list[tuple[datetime, int, bool]] = []
    if inv.deposit_id:
        rows = (await session.execute(select(OnchainPayment).where(
            OnchainPayment.request_id == inv.deposit_id,
            OnchainPayment.status != OnchainPaymentStatus.CONFLICTED))).scalars().all()
        events += [(p.first_seen_at, p.value_sat * 1000, p.credit_state == CreditState.CREDITED)
                   for p in rows]
    lns = (await session.execute(select(LnInvoice).where(
        LnInvoice.store_invoice_id == inv.id, LnInvoice.status == LnInvoiceStatus.PAID)
        # a crediting transaction just marked one paid with an UPDATE statement
        .execution_options(populate_existing=True))).scalars().all()
    # A node settles a BOLT11 only before it expires: one heard of later (the listener
    # down, the node restarting) was paid by then at the latest, not when it was credited.
    events += [(min(x.paid_at, x.expires_at) if x.paid_at else inv.created_at,
                x.paid_msat or 0, True) for x in lns]
    events.sort(key=lambda e: e[0])
    need, seen, credited, full_at = threshold_msat(inv.due_msat, inv.tolerance_bp), 0, 0, None
    for at, msat, done in events:
        seen += msat
        credited += msat if done else 0
        if full_at is None and seen >= need:
            full_at = at
    return credited, seen, full_at


async def received_msat(session: AsyncSession, inv: StoreInvoice) -> int:
    """What the invoice's payments credited, read now (not the figure its last refresh
    stored)."""
    return (await _payments(session, inv))[0]


_EVENTS = {Status.PROCESSING: "invoice.processing", Status.SETTLED: "invoice.settled",
           Status.EXPIRED: "invoice.expired", Status.INVALID: "invoice.invalid"}


async def apply_payment(session: AsyncSession, store_invoice_id: str, *,
                        settings: Settings) -> bool:
    """In the transaction that credits a payment of the invoice: bring its status up to date
    (and emit the events :func:`refresh` emits), so it is settled the moment the payment is.
    The refresher still passes by as a safety sweep; it finds nothing left to change."""
    inv = await session.get(StoreInvoice, store_invoice_id, with_for_update=True)
    if inv is None:
        return False
    return await refresh(session, inv, settings=settings)


async def refresh(session: AsyncSession, inv: StoreInvoice, *, settings: Settings) -> bool:
    """Recompute an invoice from its payments; True if anything changed. The node's part of
    a change (cancelling the other BOLT11s of a settled invoice, a BOLT11 for the rest after
    a partial payment) is :func:`lightning_follow_up`, after the commit."""
    credited, seen, full_at = await _payments(session, inv)
    if inv.additional_status == Additional.MARKED:
        # The merchant decided the status; what the invoice received still follows its
        # payments (refunds are capped by it: a part a reorg took back after the mark is not
        # refundable, one confirmed after it is).
        inv.next_check_at = None
        if (credited, seen) == (inv.confirmed_msat, inv.seen_msat):
            return False
        received_more, received_less = seen > inv.seen_msat, seen < inv.seen_msat
        inv.confirmed_msat, inv.seen_msat, inv.full_seen_at = credited, seen, full_at
        inv.updated_at = utcnow()
        if received_more:
            await _emit(session, inv, "invoice.payment_received")
        if received_less:
            await _emit(session, inv, "invoice.payment_reversed")
        return True
    now = utcnow()
    monitoring = timedelta(minutes=settings.invoice_monitoring_minutes)
    if closed(Status(inv.status), expires_at=inv.expires_at, settled_at=inv.settled_at,
              now=now, monitoring=monitoring):
        # Watched no more: a payment now shows in the wallet's statement, not on the invoice
        # (what it received is read from its payments where it counts: the refunds' cap).
        inv.next_check_at = None
        return False
    status, extra = decide(InvoiceFacts(
        due_msat=inv.due_msat, tolerance_bp=inv.tolerance_bp, confirmed_msat=credited,
        seen_msat=seen, expires_at=inv.expires_at, full_seen_at=full_at, now=now,
        monitoring=monitoring, accept_late=settings.invoice_accept_late))
    deadline = next_deadline(inv.expires_at, monitoring, now)
    if inv.next_check_at != deadline:
        inv.next_check_at = deadline
    received_more, received_less = seen > inv.seen_msat, seen < inv.seen_msat
    changed = (status, extra, credited, seen) != (
        inv.status, inv.additional_status, inv.confirmed_msat, inv.seen_msat)
    if not changed:
        return False
    old = inv.status
    inv.status, inv.additional_status = status, extra
    inv.confirmed_msat, inv.seen_msat, inv.full_seen_at = credited, seen, full_at
    inv.updated_at = utcnow()
    if status is Status.SETTLED:
        if inv.settled_at is None:
            inv.settled_at = utcnow()
    elif inv.settled_at is not None:
        # A reorg took its money back: it is not settled, and says so everywhere (a merchant
        # shipping on settled_at must not see a time); settling again sets a new one.
        inv.settled_at = None
    if received_more:
        await _emit(session, inv, "invoice.payment_received")
    if received_less:
        # A payment it had seen went away (a reorg, a double spend, a replacement): found
        # from outside, a settled invoice a reorg sent back to new told the merchant nothing,
        # its last event still "settled". The event carries the new status and amounts.
        await _emit(session, inv, "invoice.payment_reversed")
    if status != old and status in _EVENTS:
        await _emit(session, inv, _EVENTS[status])
    log.info("invoice_updated", invoice=inv.id, status=inv.status,
             additional=inv.additional_status, seen_msat=seen, credited_msat=credited)
    return True


# A remainder BOLT11 is not issued with less time than this before its invoice expires.
MIN_REMAINDER_SECONDS = 10


@dataclass(frozen=True, slots=True)
class FollowUp:
    """What the node must do for an invoice after a change: cancel these BOLT11s (paid in
    full, or asking for more than is still due: nobody may pay them any more), and/or issue
    one for ``remainder_msat``."""

    cancel: tuple[str, ...] = ()
    remainder_msat: int = 0
    ends_at: datetime | None = None  # the invoice's expiry, which the remainder must not pass

    def remainder_seconds(self) -> int:
        """The remainder BOLT11's expiry if made now: it ends with the invoice (whole
        seconds, rounded down, one spared for the node's time to make it), never later; 0
        in the invoice's last seconds, when nobody could pay it."""
        if not self.remainder_msat or self.ends_at is None:
            return 0
        seconds = int((self.ends_at - utcnow()).total_seconds()) - 1
        return seconds if seconds >= MIN_REMAINDER_SECONDS else 0


async def follow_up_of(session: AsyncSession, invoice_id: str) -> FollowUp:
    """Read what :func:`lightning_follow_up` should do now (a state check, so it is safe to
    repeat: a remainder BOLT11 already issued is not issued twice)."""
    inv = await session.get(StoreInvoice, invoice_id)
    if inv is None:
        return FollowUp()
    lns = (await session.execute(select(LnInvoice).where(
        LnInvoice.store_invoice_id == inv.id,
        LnInvoice.status.in_((LnInvoiceStatus.OPEN, LnInvoiceStatus.RESERVED))
    ))).scalars().all()
    open_ln = [ln for ln in lns if ln.status == LnInvoiceStatus.OPEN]
    if inv.status in (Status.SETTLED, Status.PROCESSING, Status.INVALID):
        # Paid in full, or seen in full and confirming: nobody may pay a BOLT11 of it any
        # more (found from outside: the BOLT11 of a unified QR stayed payable while its
        # on-chain payment confirmed, and a customer paid the invoice twice). If the seen
        # payment goes away, the invoice is new again and the rest below asks for it anew.
        # Marked settled or invalid by the merchant: the same (found from outside too).
        return FollowUp(cancel=tuple(ln.payment_hash for ln in open_ln))
    if len(open_ln) < len(lns):  # a payment held for review: its case decides what is due
        return FollowUp()
    # What is due, if no open BOLT11 asks for exactly that: the rest after a partial
    # payment, or all of it once the invoice's BOLT11 was cancelled (an internal payment
    # refused after taking it off the node: satvault.withdrawals.refused).
    remaining = inv.due_msat - inv.seen_msat
    # A BOLT11 for more than is still due would have its payer pay twice (found from
    # outside: after a partial payment, a phone that had scanned the first QR code paid the
    # whole amount again): cancelled. If the partial payment goes away, the whole is due
    # again and a BOLT11 for it is issued below.
    over = tuple(ln.payment_hash for ln in open_ln
                 if inv.status == Status.NEW and ln.amount_msat is not None
                 and ln.amount_msat > remaining)
    if (inv.status == Status.NEW and remaining >= 1000
            and "lightning" in inv.payment_methods
            and all(ln.amount_msat != remaining for ln in open_ln)):
        todo = FollowUp(cancel=over, remainder_msat=remaining, ends_at=inv.expires_at)
        if todo.remainder_seconds():
            return todo
    return FollowUp(cancel=over)


async def record_follow_up(session: AsyncSession, invoice_id: str, *,
                           cancelled: Sequence[str], remainder: Invoice | None,
                           expiry_seconds: int) -> None:
    """The database's half of the follow-up, once the node answered."""
    if cancelled:
        await session.execute(update(LnInvoice).where(
            LnInvoice.payment_hash.in_(cancelled), LnInvoice.status == LnInvoiceStatus.OPEN
        ).values(status=LnInvoiceStatus.CANCELED))
    if remainder is not None:
        inv = await session.get(StoreInvoice, invoice_id, with_for_update=True)
        if inv is None or inv.status != Status.NEW:
            return  # paid or expired meanwhile: the BOLT11 just issued is left to expire
        wallet = await session.get(Wallet, inv.wallet_id)
        assert wallet is not None
        row = await store_invoice(session, remainder, wallet=wallet, memo=f"Invoice {inv.id}",
                                  purpose="invoice", expiry_seconds=expiry_seconds,
                                  store_invoice_id=inv.id, flush=False)
        row.expires_at = min(row.expires_at, inv.expires_at)


async def mark_invoice(session: AsyncSession, inv: StoreInvoice, status: str, *,
                       actor: str) -> StoreInvoice:
    """The merchant sets the status by hand. The invoice row is locked and read again first,
    as the crediting transaction and the refresher lock it: a mark and a status change
    written at the same moment are counted one after the other, so a mark never writes over
    a settlement it did not see (nor two marks over each other). A mark is audited
    (``invoice.mark``: ``actor``, the status before and after); marking the status the
    invoice already has by a mark changes nothing, writes nothing and sends no event."""
    if status not in (Status.SETTLED, Status.INVALID):
        raise InvalidInput("an invoice can be marked settled or invalid")
    await session.refresh(inv, with_for_update=True)
    if inv.status == status and inv.additional_status == Additional.MARKED:
        return inv  # the same mark again (a retry, a double click): already done
    if inv.status in (Status.SETTLED, Status.INVALID) \
            and inv.additional_status != Additional.MARKED:
        raise InvalidInput(f"the invoice is already {inv.status}")
    before = {"status": str(inv.status), "additional_status": str(inv.additional_status)}
    inv.status, inv.additional_status, inv.updated_at = Status(status), Additional.MARKED, utcnow()
    inv.next_check_at = None  # the merchant decided; payments no longer move it
    if status == Status.SETTLED and inv.settled_at is None:
        inv.settled_at = utcnow()
    await record(session, actor=actor, action="invoice.mark", object=inv.id, before=before,
                 after={"status": str(inv.status),
                        "additional_status": str(inv.additional_status)},
                 at=inv.updated_at)
    await _emit(session, inv, f"invoice.{status}")
    return inv


async def get_invoice(session: AsyncSession, invoice_id: str) -> StoreInvoice:
    inv = await session.get(StoreInvoice, invoice_id)
    if inv is None:
        raise NotFound(f"invoice {invoice_id!r} not found")
    return inv


async def _emit(session: AsyncSession, inv: StoreInvoice, event: str, *,
                known: Destinations | None = None, webhooks: Hooks | None = None
                ) -> dict[str, Any]:
    """Write the event in this transaction (webhooks and live updates read the outbox);
    returns its payload. ``known``: the destinations, when the caller has just made them."""
    from satvault.events.outbox import emit
    from satvault.invoices.views import invoice_payload

    payload = await invoice_payload(session, inv, str(session.info.get("public_url", "")),
                                    known=known)
    await emit(session, type=event, subject_type="invoice", subject_id=inv.id,
               payload=payload, store_id=inv.store_id, wallet_id=inv.wallet_id,
               webhooks=webhooks)
    return payload
