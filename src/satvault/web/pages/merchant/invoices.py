"""``/dashboard/m/{merchant_id}/invoices``: create an invoice for one of the merchant's
stores, list them with the API's filters and cursor, and each invoice's detail: its payments
with their confirmations, the checkout link and its QR code, marking it settled or invalid
and refunding it (a withdrawal: step-up first) — through the API's services."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from satvault.accounts import service as accounts
from satvault.accounts.access import owns_store
from satvault.auth.sessions import SessionView
from satvault.checkout.i18n import Language
from satvault.invoices.access import visible_invoice
from satvault.invoices.payments import invoice_payments
from satvault.invoices.service import (
    InvoiceRequest,
    StoreChanged,
    create_store_invoice,
    invoice_store,
    mark_invoice,
    quote_store_invoice,
)
from satvault.invoices.status import Status
from satvault.invoices.views import invoice_payload
from satvault.kernel.days import day_end, day_start
from satvault.kernel.errors import InvalidInput, NotFound, SatvaultError
from satvault.onchain.qr import qr_svg
from satvault.web.deps import SessionDep
from satvault.web.pages.deps import (
    CsrfProtected,
    KeepBody,
    PageCreateLimit,
    PageLang,
    PageUser,
    SteppedUp,
    mark_page,
)
from satvault.web.pages.merchant.scope import (
    FormRefused,
    Owner,
    form_key,
    form_msat,
    form_values,
    owner,
    parse,
    refusal,
    transaction,
    typed,
)
from satvault.web.pages.render import render
from satvault.web.routes.invoices import InvoiceIn, MarkIn, RefundIn, submit_refund
from satvault.web.routes.invoices import list_invoices as api_list_invoices
from satvault.web.state import (
    follow_up_invoice,
    lightning_of,
    runtime_of,
    sessions_of,
    settings_of,
)

__all__ = ["router"]

router = APIRouter(prefix="/dashboard/m/{merchant_id}", include_in_schema=False,
                   dependencies=[Depends(mark_page)])
PAGE_SIZE = 25
STATUSES = tuple(s.value for s in Status)


def qr_data_uri(text: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(qr_svg(text, scale=4)).decode()


def _day(text: str, what: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FormRefused(f"{what}: expected a date such as 2026-01-31") from None


class _Filters(BaseModel):
    """The list's query, read by FastAPI into this model: a value over its limit is a 422."""

    store: str = Field(default="", max_length=40)
    status: str = Field(default="", max_length=12)
    created_from: str = Field(default="", max_length=10)
    created_to: str = Field(default="", max_length=10)
    cursor: str = Field(default="", max_length=200)


async def _list(request: Request, session: Any, who: Owner, stores: list[Any],
                f: _Filters) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """(invoices, next cursor, a refusal of the filters) for one store, as the API lists."""
    if not stores:
        return [], None, None
    store_id = f.store or stores[0].id
    try:
        if f.status and f.status not in STATUSES:
            raise FormRefused(f"status must be one of {', '.join(STATUSES)}")
        start, end = _day(f.created_from, "from"), _day(f.created_to, "to")
        listed = await api_list_invoices(
            store_id, request, session, who.principal,
            status=Status(f.status) if f.status else None, order_id=None,
            created_from=day_start(start), created_to=day_end(end),
            limit=PAGE_SIZE, cursor=f.cursor or None)
    except (FormRefused, InvalidInput) as exc:
        return [], None, str(exc)
    return listed["items"], listed["next_cursor"], None


def _list_page(request: Request, lang: Language, view: SessionView, who: Owner,
               stores: list[Any], f: _Filters, items: list[dict[str, Any]],
               next_cursor: str | None, filter_error: str | None, *,
               form: dict[str, Any] | None = None, error: str | None = None,
               status_code: int = 200) -> HTMLResponse:
    return render(request, "merchant/invoices.html", lang=lang, view=view,
                  merchant=who.merchant, stores=stores, filters=f,
                  selected_store=f.store or (stores[0].id if stores else ""),
                  statuses=STATUSES, invoices=items, next_cursor=next_cursor,
                  filter_error=filter_error,
                  form=form or {"currency": "", "expiration_minutes": "15",
                                "payment_methods": ["onchain", "lightning"]},
                  error=error, status_code=(filter_error and 422) or status_code)


@router.get("/invoices", response_class=HTMLResponse)
async def invoices_page(merchant_id: str, request: Request, view: PageUser, lang: PageLang,
                        session: SessionDep,
                        f: Annotated[_Filters, Query()]) -> HTMLResponse:
    who = await owner(session, view, merchant_id)
    stores = await accounts.list_stores(session, merchant_id=who.id)
    items, nxt, problem = await _list(request, session, who, stores, f)
    return _list_page(request, lang, view, who, stores, f, items, nxt, problem)


def _invoice_request(body: InvoiceIn, default_currency: str) -> InvoiceRequest:
    return InvoiceRequest(
        amount=body.amount, currency=body.currency or default_currency,
        order_id=body.order_id, metadata=body.metadata,
        expiration_minutes=body.expiration_minutes,
        payment_methods=tuple(body.payment_methods), speed_policy=body.speed_policy,
        payment_tolerance_percent=body.payment_tolerance_percent,
        redirect_url=body.redirect_url)


def _invoice_body(values: dict[str, Any]) -> InvoiceIn:
    data = typed(values, ints=("expiration_minutes", "speed_policy"),
                 drop_blank=("currency", "order_id", "speed_policy", "redirect_url",
                             "payment_tolerance_percent", "expiration_minutes"))
    data.pop("store_id", None)
    description = str(data.pop("description", "") or "").strip()
    if len(description) > 500:
        raise FormRefused("description: at most 500 characters")
    methods = data.get("payment_methods", [])
    data["payment_methods"] = [methods] if isinstance(methods, str) else methods
    if not data["payment_methods"]:
        raise FormRefused("choose at least one way to pay (on-chain or Lightning)")
    if data.get("currency"):
        data["currency"] = str(data["currency"]).strip()
    data["metadata"] = {"itemDesc": description} if description else None
    return parse(InvoiceIn, data)


@router.post("/invoices", dependencies=[CsrfProtected, PageCreateLimit])
async def create_invoice(merchant_id: str, request: Request, view: PageUser,
                         lang: PageLang) -> Response:
    """As ``POST /api/v1/stores/{id}/invoices``: the store and the quote (rate, the node's
    BOLT11) with no transaction open, then one short transaction records the invoice."""
    values = await form_values(request)
    settings, runtime = settings_of(request), runtime_of(request)
    rates = runtime.rates if runtime is not None else None
    try:
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
        body = _invoice_body(values)
        store_id = str(values.get("store_id", ""))
        invoice_id = None
        for fresh in (False, True):
            found = await invoice_store(sessions_of(request), store_id, fresh=fresh)
            if found is None or not owns_store(who.principal, found.store):
                raise FormRefused("choose one of your stores", status=404)
            wanted = _invoice_request(body, found.store.default_currency)
            quote = await quote_store_invoice(store=found.store, request=wanted,
                                              settings=settings,
                                              lightning=lightning_of(request), rates=rates)
            try:
                async with transaction(request) as s:
                    inv, _ = await create_store_invoice(
                        s, store=found.store, settings=settings, request=wanted, quote=quote,
                        webhooks=found.webhooks)
                    invoice_id = inv.id
                break
            except StoreChanged:
                continue
        if invoice_id is None:
            raise InvalidInput("the store changed while the invoice was made; try again")
    except (FormRefused, SatvaultError) as exc:
        status, message = refusal(exc)
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            stores = await accounts.list_stores(s, merchant_id=who.id)
            f = _Filters(store=str(values.get("store_id", ""))[:40]) \
                if any(x.id == values.get("store_id") for x in stores) else _Filters()
            items, nxt, _ = await _list(request, s, who, stores, f)
        methods = values.get("payment_methods", [])
        form = {**values, "payment_methods": [methods] if isinstance(methods, str) else methods}
        return _list_page(request, lang, view, who, stores, f, items, nxt, None, form=form,
                          error=message, status_code=status)
    return RedirectResponse(f"/dashboard/m/{merchant_id}/invoices/{invoice_id}",
                            status_code=303)


async def _detail(request: Request, lang: Language, view: SessionView, session: Any,
                  who: Owner, invoice_id: str, *, error: str | None = None,
                  refund_form: dict[str, Any] | None = None, notice: str | None = None,
                  status_code: int = 200) -> HTMLResponse:
    inv = await visible_invoice(session, who.principal, invoice_id)
    payload = await invoice_payload(session, inv, settings_of(request).public_url)
    payments = await invoice_payments(session, inv)
    store = await accounts.get_store(session, inv.store_id)
    return render(request, "merchant/invoice.html", lang=lang, view=view,
                  merchant=who.merchant, store=store, invoice=payload, payments=payments,
                  metadata_json=json.dumps(payload["metadata"], ensure_ascii=False, indent=1),
                  checkout_qr=qr_data_uri(payload["checkout_url"]),
                  can_mark=inv.status not in (Status.SETTLED, Status.INVALID)
                  or inv.additional_status == "marked",
                  error=error, notice=notice, refund_form=refund_form or {},
                  # A new key at every render: a corrected refund is another request.
                  refund_key=form_key(), status_code=status_code)


@router.get("/invoices/{invoice_id}", response_class=HTMLResponse)
async def invoice_page(merchant_id: str, invoice_id: str, request: Request, view: PageUser,
                       lang: PageLang, session: SessionDep, done: str = "") -> HTMLResponse:
    who = await owner(session, view, merchant_id)
    notice = {"marked": "The invoice was marked.",
              "refund": "The refund was requested."}.get(done)
    return await _detail(request, lang, view, session, who, invoice_id, notice=notice)


@router.post("/invoices/{invoice_id}/mark", dependencies=[CsrfProtected])
async def mark(merchant_id: str, invoice_id: str, request: Request, view: PageUser,
               lang: PageLang) -> Response:
    values = await form_values(request)
    try:
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            inv = await visible_invoice(s, who.principal, invoice_id)
            body = parse(MarkIn, {"status": values.get("status", "")})
            if values.get("confirm") != "yes":
                raise FormRefused("tick the box to confirm")
            await mark_invoice(s, inv, body.status, actor=who.actor)
    except (FormRefused, SatvaultError) as exc:
        status, message = refusal(exc)
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            return await _detail(request, lang, view, s, who, invoice_id, error=message,
                                 status_code=status)
    await follow_up_invoice(request, invoice_id)  # its BOLT11s off the node, as in the API
    return RedirectResponse(f"/dashboard/m/{merchant_id}/invoices/{invoice_id}?done=marked",
                            status_code=303)


@router.post("/invoices/{invoice_id}/refund",
             dependencies=[KeepBody, CsrfProtected, PageCreateLimit])
async def refund(merchant_id: str, invoice_id: str, request: Request, view: SteppedUp,
                 lang: PageLang) -> Response:
    """A refund is a withdrawal from the merchant's wallet: only after a step-up, and once
    per form (its hidden key, as the withdraw form's: a double submit refunds once)."""
    values = await form_values(request)
    try:
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            await visible_invoice(s, who.principal, invoice_id)
        body = parse(RefundIn, {"destination": str(values.get("destination", "")).strip(),
                                "amount_msat": form_msat(values, "amount_sat", "amount")})
        if values.get("confirm") != "yes":
            raise FormRefused("tick the box to confirm")
        key = str(values.get("idempotency_key", ""))
        if not key:
            raise FormRefused("this form expired: reload the page and try again")
        answer = await submit_refund(request, who.principal, invoice_id=invoice_id,
                                     body=body, idempotency_key=key)
        if answer.status_code >= 400:  # a refusal stored with this key, replayed
            raise FormRefused(str(json.loads(bytes(answer.body)).get("detail", "refused")),
                              answer.status_code)
    except (FormRefused, SatvaultError) as exc:
        if isinstance(exc, NotFound):
            raise
        status, message = refusal(exc)
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            return await _detail(request, lang, view, s, who, invoice_id, error=message,
                                 refund_form=values, status_code=status)
    return RedirectResponse(f"/dashboard/m/{merchant_id}/invoices/{invoice_id}?done=refund",
                            status_code=303)
