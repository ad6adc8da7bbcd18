"""Store invoice endpoints (Greenfield-like): create (idempotent), get, list, mark, refund."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, Field, Strict, WithJsonSchema
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.access import owned_store, owns_store
from satvault.accounts.models import Store
from satvault.accounts.service import Principal
from satvault.backends.errors import BackendError
from satvault.invoices.access import visible_invoice
from satvault.invoices.models import StoreInvoice
from satvault.invoices.refunds import prepare_refund, record_refund
from satvault.invoices.service import (
    InvoiceRequest,
    InvoiceStore,
    Quote,
    StoreChanged,
    create_store_invoice,
    destinations_of,
    invoice_store,
    mark_invoice,
    quote_store_invoice,
)
from satvault.invoices.status import Status
from satvault.invoices.views import invoice_payload
from satvault.kernel.errors import InvalidInput, NotFound, SatvaultError
from satvault.kernel.retrying import retrying
from satvault.ledger.history import InvalidCursor
from satvault.rates.errors import RateError
from satvault.web.deps import IdempotencyKey, SessionDep, require_scope
from satvault.web.fields import STRICT_BODY, Msat, SingleLine, SpeedPolicy
from satvault.web.guard import bad_text
from satvault.web.idempotency import PrepareAgain, run_idempotent
from satvault.web.openapi import problem_responses
from satvault.web.ratelimit import CreateLimit
from satvault.web.routes.withdrawals import out
from satvault.web.state import (
    follow_up_invoice,
    invoice_follow_up_of,
    lightning_of,
    lnurl_http_of,
    payer_wake_of,
    runtime_of,
    sessions_of,
    settings_of,
    store_invoice_hook_of,
)
from satvault.withdrawals.refused import cancels_on_refusal
from satvault.withdrawals.service import PreparedDestination, latest_payment

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["invoices"],
                   # a node, the ledger or a rate source busy, unreachable or not set up
                   responses=problem_responses(503))
Writer = Annotated[Principal, Depends(require_scope("invoices:write"))]
Reader = Annotated[Principal, Depends(require_scope("invoices:read"))]


# Basis points are kept (found from outside: "0.015" was stored as 1 bp, "0.009" as 0, with
# no word): at most two places, so what is asked is what is kept.
_TOLERANCE = re.compile(r"^(50(\.0{1,2})?|[1-4]?[0-9](\.[0-9]{1,2})?)$")


def _tolerance_text(value: object) -> object:
    # As a string, the schema's pattern: plain decimals, no exponent ("1e1" was taken as 10).
    if isinstance(value, str) and not _TOLERANCE.match(value):
        raise ValueError("a decimal from 0 to 50 with at most 2 places, like \"2.5\"")
    return value


class InvoiceIn(BaseModel):
    model_config = STRICT_BODY
    amount: str = Field(description="A decimal string in `currency` (BTC, SATS or fiat).",
                        max_length=40)
    currency: str | None = Field(default=None, max_length=8, pattern=r"^[A-Za-z]{3,4}$",
                                 description="BTC, SATS or a fiat code; default: the store's "
                                             "default_currency.")
    order_id: SingleLine | None = Field(default=None, max_length=120)
    metadata: dict[str, Any] | None = None
    expiration_minutes: Annotated[int, Strict()] = Field(default=15, ge=1, le=10080)
    payment_methods: list[Literal["onchain", "lightning"]] = ["onchain", "lightning"]
    speed_policy: SpeedPolicy | None = None
    payment_tolerance_percent: Annotated[Decimal, BeforeValidator(_tolerance_text),
                                         Field(ge=0, le=50, decimal_places=2),
                                         WithJsonSchema({
        "anyOf": [{"type": "number", "minimum": 0, "maximum": 50, "multipleOf": 0.01},
                  {"type": "string", "pattern": _TOLERANCE.pattern}],
        "default": "0"})] = Decimal(0)
    redirect_url: SingleLine | None = Field(default=None, max_length=2000)


class MarkIn(BaseModel):
    model_config = STRICT_BODY
    status: Literal["settled", "invalid"]


class RefundIn(BaseModel):
    model_config = STRICT_BODY
    destination: str = Field(min_length=1, max_length=2000,
                             description="The customer's address, BIP21, BOLT11, LNURL or "
                                         "Lightning Address.")
    amount_msat: Msat | None = Field(default=None,
                                    description="Default: what is left of what the invoice "
                                                "received after its earlier refunds.")


Refunder = Annotated[Principal, Depends(require_scope("withdrawals:write"))]


@router.post("/stores/{store_id}/invoices", status_code=201, dependencies=[CreateLimit])
async def create(store_id: str, body: InvoiceIn, request: Request, principal: Writer,
                 idempotency_key: IdempotencyKey) -> JSONResponse:
    settings, runtime, lightning = settings_of(request), runtime_of(request), \
        lightning_of(request)
    rates = runtime.rates if runtime is not None else None

    def invoice_request(store: Store) -> InvoiceRequest:
        return InvoiceRequest(
            amount=body.amount, currency=body.currency or store.default_currency,
            order_id=body.order_id, metadata=body.metadata,
            expiration_minutes=body.expiration_minutes,
            payment_methods=tuple(body.payment_methods), speed_policy=body.speed_policy,
            payment_tolerance_percent=body.payment_tolerance_percent,
            redirect_url=body.redirect_url)

    async def prepare(fresh: bool = False) -> tuple[InvoiceStore, Quote]:
        # The ownership check (a store never changes merchant, so it holds for the work; the
        # store is usually remembered), then the rate and the node's BOLT11 with no
        # transaction open.
        found = await invoice_store(sessions_of(request), store_id, fresh=fresh)
        if found is None or not owns_store(principal, found.store):
            raise NotFound(f"store {store_id!r} not found")
        store = found.store
        try:
            return found, await quote_store_invoice(
                store=store, request=invoice_request(store), settings=settings,
                lightning=lightning, rates=rates)
        except (BackendError, RateError):
            raise  # the node or the rate sources, not the store: asking twice would not help
        except SatvaultError:
            if not found.remembered:
                raise
            return await prepare(fresh=True)  # refused with settings that may be gone

    async def work(session: AsyncSession, ready: tuple[InvoiceStore, Quote]
                   ) -> tuple[int, Any]:
        found, quote = ready
        store = found.store
        try:
            _, payload = await create_store_invoice(session, store=store, settings=settings,
                                                    request=invoice_request(store), quote=quote,
                                                    webhooks=found.webhooks)
        except StoreChanged as exc:
            raise PrepareAgain from exc
        return 201, payload

    # One transaction: a repeated quote only leaves an unpaid BOLT11 to expire.
    owner = f"{principal.owner_type}:{principal.owner_id}"
    return await run_idempotent(request, owner=owner, key=idempotency_key, work=work,
                                prepare=prepare, repeatable_prepare=True)


@router.get("/invoices/{invoice_id}")
async def get(invoice_id: str, request: Request, session: SessionDep, principal: Reader
              ) -> dict[str, Any]:
    inv = await visible_invoice(session, principal, invoice_id)
    return await invoice_payload(session, inv, request.app.state.settings.public_url)


def _iso_date_time(value: object) -> object:
    # pydantic would also take a number of seconds; the schema says RFC 3339 date-time.
    if isinstance(value, str) and not re.match(r"\d{4}-\d\d-\d\d", value):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")
    return value


DateTimeQuery = Annotated[datetime | None, BeforeValidator(_iso_date_time)]


def _cursor(text: str | None) -> tuple[datetime, str] | None:
    """A cursor is what ``next_cursor`` gave: base64 of ``<created_at with zone>|<id>``. One
    whose time has no zone (or that holds text the database cannot store) was not made here
    and is refused rather than guessed at."""
    if not text:
        return None
    try:
        at, _, ident = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode() \
            .partition("|")
        when = datetime.fromisoformat(at)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("invalid cursor") from exc
    if when.tzinfo is None or bad_text(ident) is not None or len(ident) > 64:
        raise InvalidCursor("invalid cursor")
    return _utc(when, "cursor"), ident


def _utc(when: datetime, what: str) -> datetime:
    """``when`` in UTC (a time without zone is taken as UTC); refused if UTC cannot hold it
    (year 1 at +14:00, year 9999 at -14:00)."""
    try:
        return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except OverflowError as exc:
        raise InvalidInput(f"{what} is out of range") from exc


@router.get("/stores/{store_id}/invoices")
async def list_invoices(
    store_id: str, request: Request, session: SessionDep, principal: Reader,
    status: Annotated[Status | None, Query()] = None,
    order_id: Annotated[str | None, Query(max_length=120)] = None,
    created_from: DateTimeQuery = None, created_to: DateTimeQuery = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    await owned_store(session, principal, store_id)
    created_from, created_to = (None if d is None else _utc(d, name) for d, name in
                                ((created_from, "created_from"), (created_to, "created_to")))
    q = select(StoreInvoice).where(StoreInvoice.store_id == store_id)
    if status:
        q = q.where(StoreInvoice.status == status)
    if order_id:
        q = q.where(StoreInvoice.order_id == order_id)
    if created_from:
        q = q.where(StoreInvoice.created_at >= created_from)
    if created_to:
        q = q.where(StoreInvoice.created_at < created_to)
    after = _cursor(cursor)
    if after:
        q = q.where((StoreInvoice.created_at < after[0])
                    | ((StoreInvoice.created_at == after[0]) & (StoreInvoice.id < after[1])))
    rows = (await session.execute(q.order_by(StoreInvoice.created_at.desc(),
                                             StoreInvoice.id.desc()).limit(limit + 1))
            ).scalars().all()
    page = rows[:limit]
    nxt = None
    if len(rows) > limit:
        last = page[-1]
        nxt = base64.urlsafe_b64encode(f"{last.created_at.isoformat()}|{last.id}".encode()
                                       ).decode().rstrip("=")
    public = request.app.state.settings.public_url
    known = await destinations_of(session, page)
    return {"items": [await invoice_payload(session, i, public, known=known[i.id])
                      for i in page],
            "next_cursor": nxt}


@router.post("/invoices/{invoice_id}/mark")
async def mark(invoice_id: str, body: MarkIn, request: Request, principal: Writer
               ) -> dict[str, Any]:
    async def unit(session: AsyncSession) -> StoreInvoice:
        inv = await visible_invoice(session, principal, invoice_id)
        return await mark_invoice(session, inv, body.status, actor=f"key:{principal.key_id}")

    sessions = sessions_of(request)
    await retrying(sessions, unit)
    # Once the mark committed, its BOLT11s are taken off the node (found from outside: a
    # customer paid an invoice the merchant had marked settled a second time).
    await follow_up_invoice(request, invoice_id)
    async with sessions() as session:
        inv = await visible_invoice(session, principal, invoice_id)
        return await invoice_payload(session, inv, settings_of(request).public_url)


@router.post("/invoices/{invoice_id}/refunds", status_code=201, dependencies=[CreateLimit])
async def refund(invoice_id: str, body: RefundIn, request: Request, principal: Refunder,
                 idempotency_key: IdempotencyKey) -> JSONResponse:
    """A refund is a withdrawal from the merchant's wallet to a destination the customer gave,
    at most what the invoice received; the store's webhooks hear ``withdrawal.*``."""
    return await submit_refund(request, principal, invoice_id=invoice_id, body=body,
                               idempotency_key=idempotency_key)


async def submit_refund(request: Request, principal: Principal, *, invoice_id: str,
                        body: RefundIn, idempotency_key: str | None) -> JSONResponse:
    """Refund once per (caller, idempotency key): the API's endpoint, and the dashboard's
    refund form (whose key is a hidden field of the form). The answer is the API's (201 with
    the withdrawal, or a stored refusal replayed); refusals raise."""
    sessions, settings, lightning = sessions_of(request), settings_of(request), \
        lightning_of(request)

    # A refund paying one of our invoices took it off the node (its hash, the paying wallet).
    taken: list[tuple[str, str]] = []

    async def prepare() -> tuple[int, PreparedDestination]:
        amount, prepared = await prepare_refund(
            sessions, principal=principal, invoice_id=invoice_id,
            destination=body.destination, amount_msat=body.amount_msat, settings=settings,
            lightning=lightning, http=lnurl_http_of(request))
        taken[:] = [t for t in (prepared.taken(),) if t is not None]
        return amount, prepared

    async def work(session: AsyncSession, ready: tuple[int, PreparedDestination]
                   ) -> tuple[int, Any]:
        amount, prepared = ready
        wd = await record_refund(session, principal=principal, invoice_id=invoice_id,
                                 amount=amount, prepared=prepared, settings=settings,
                                 lightning=lightning, payer_wake=payer_wake_of(request),
                                 on_store_invoice=store_invoice_hook_of(request))
        return 201, out(wd, await latest_payment(session, wd.id)).model_dump(mode="json")

    owner = f"{principal.owner_type}:{principal.owner_id}"
    async with cancels_on_refusal(sessions, lambda: taken[0] if taken else None,
                                  follow_up=invoice_follow_up_of(request)):
        return await run_idempotent(request, owner=owner, key=idempotency_key, work=work,
                                    prepare=prepare)
