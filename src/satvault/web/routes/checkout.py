"""The hosted checkout page and what it loads: ``/i/{id}``, its status, QR codes and assets
(rendered by :mod:`satvault.checkout.page`).

No authentication: the invoice id is unguessable and the page shows only the payer's part (see
:mod:`satvault.checkout.view`).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response

from satvault.accounts.models import Store
from satvault.checkout.i18n import choose_language
from satvault.checkout.page import (
    PAGE_HEADERS,
    asset,
    find_invoice,
    render_not_found,
    render_page,
)
from satvault.checkout.view import live_payment, public_status, qr_data
from satvault.kernel.errors import NotFound
from satvault.onchain.qr import qr_svg
from satvault.web.deps import SessionDep
from satvault.web.ratelimit import PublicLimit

__all__ = ["router"]

router = APIRouter(tags=["checkout"], dependencies=[PublicLimit])


def _not_found(request: Request, lang_query: str | None) -> HTMLResponse:
    lang = choose_language(query=lang_query, invoice_lang=None,
                           accept_language=request.headers.get("accept-language"))
    return HTMLResponse(render_not_found(lang), status_code=404, headers=PAGE_HEADERS)


@router.get("/i/{invoice_id}", response_class=HTMLResponse, include_in_schema=False)
async def checkout_page(
    invoice_id: str, request: Request, session: SessionDep,
    lang: str | None = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> HTMLResponse:
    inv = await find_invoice(session, invoice_id)
    if inv is None:
        return _not_found(request, lang)
    metadata = json.loads(inv.metadata_json or "{}")
    language = choose_language(
        query=lang, invoice_lang=metadata.get("lang") if isinstance(metadata, dict) else None,
        accept_language=accept_language)
    store = await session.get(Store, inv.store_id)
    status = await public_status(session, inv)
    html = render_page(inv, store_name=store.name if store else "", status=status,
                       language=language)
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/i/{invoice_id}/status")
async def checkout_status(invoice_id: str, session: SessionDep) -> JSONResponse:
    """The payer's view of an invoice: status, what is still due and where to pay it."""
    inv = await find_invoice(session, invoice_id)
    if inv is None:
        raise NotFound(f"invoice {invoice_id!r} not found")
    return JSONResponse(await public_status(session, inv),
                        headers={"Cache-Control": "no-store"})


@router.get("/i/{invoice_id}/qr/{kind}.svg", response_class=Response,
            responses={200: {"content": {"image/svg+xml": {}}}})
async def checkout_qr(
    invoice_id: str, session: SessionDep,
    kind: Annotated[Literal["unified", "onchain", "lightning"], PathParam()],
) -> Response:
    """The QR code of what is due now: unified BIP21, on-chain only or Lightning only."""
    inv = await find_invoice(session, invoice_id)
    data = qr_data(await live_payment(session, inv), kind) if inv is not None else None
    if data is None:
        raise NotFound(f"no {kind} payment is due on invoice {invoice_id!r}")
    return Response(qr_svg(data, scale=4), media_type="image/svg+xml",
                    headers={"Cache-Control": "private, max-age=30",
                             "X-Content-Type-Options": "nosniff"})


@router.get("/checkout/static/{name}", include_in_schema=False)
async def checkout_asset(name: str) -> Response:
    found = asset(name)
    if found is None:
        raise NotFound(f"no checkout asset {name!r}")
    return Response(found.body, media_type=found.media_type,
                    headers={"Cache-Control": "public, max-age=86400",
                             "X-Content-Type-Options": "nosniff"})
