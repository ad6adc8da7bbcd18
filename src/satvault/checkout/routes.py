"""The hosted checkout page and what it loads: ``/i/{id}``, its status, QR codes and assets.

No authentication: the invoice id is unguessable and the page shows only the payer's part (see
:mod:`satvault.checkout.view`). Everything the page uses is served from here: no third-party
script, font or image, enforced by a Content-Security-Policy of ``'self'``. Live updates come
from the event stream (``/api/v1/events/stream?invoice_id=…``) when it is there, and from
polling ``/i/{id}/status`` every two seconds when it is not.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Store
from satvault.checkout.i18n import (
    LANGUAGES,
    N_,
    Language,
    choose_language,
    format_btc,
    format_fiat,
    format_number,
    translations,
)
from satvault.checkout.view import (
    NO_COUNT,
    OPEN_STATES,
    STATES,
    live_payment,
    public_status,
    qr_data,
)
from satvault.db import utcnow
from satvault.invoices.models import StoreInvoice
from satvault.kernel.errors import NotFound
from satvault.onchain.bip21 import msat_to_sat_ceil
from satvault.onchain.qr import qr_svg
from satvault.rates.base import currency_scale
from satvault.rates.errors import UnsupportedCurrency
from satvault.web.deps import SessionDep
from satvault.web.ratelimit import PublicLimit

__all__ = ["router"]

router = APIRouter(tags=["checkout"], dependencies=[PublicLimit])

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
REDIRECT_SECONDS = 5
POLL_MILLISECONDS = 2000
INVOICE_EVENTS = ("invoice.created", "invoice.payment_received", "invoice.processing",
                  "invoice.settled", "invoice.expired", "invoice.invalid")
# The page may load and talk to this origin only; no inline script or style runs.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# Strings the page's script needs, translated into the page's language.
SCRIPT_MESSAGES = {
    "expires_in": N_("Expires in %(time)s"),
    "copy": N_("Copy"),
    "copied": N_("Copied"),
    "copy_failed": N_("Copy failed"),
    "returning": N_("Returning to the shop in %(seconds)s s…"),
    "reconnecting": N_("Reconnecting…"),
    "no_count": NO_COUNT,
}
SATS = N_("%(amount)s sats")
RATE = N_("1 BTC = %(rate)s")
INVOICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


# ------------------------------------------------------------------------------- rendering

@cache
def _env(code: str) -> Environment:
    """One template environment per language, so concurrent requests never share one."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(("html",)), undefined=StrictUndefined,
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(  # type: ignore[attr-defined]
        translations(code), newstyle=True)
    env.filters["btc_plain"] = _btc_plain
    return env


def _btc_plain(sat: int | None) -> str:
    """What a wallet's amount field takes: ``0.00150000`` (a dot, eight decimals)."""
    if sat is None:
        return ""
    whole, frac = divmod(sat, 100_000_000)
    return f"{whole}.{frac:08d}"


_TYPES = {".css": "text/css", ".js": "text/javascript"}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    version: str


@cache
def _assets() -> dict[str, _Asset]:
    found = {}
    for path in sorted(STATIC_DIR.iterdir()):
        media_type = _TYPES.get(path.suffix)
        if path.is_file() and media_type:
            body = path.read_bytes()
            found[path.name] = _Asset(body, media_type,
                                      hashlib.sha256(body).hexdigest()[:10])
    return found


def _asset_url(name: str) -> str:
    return f"/checkout/static/{name}?v={_assets()[name].version}"


def _duration(seconds: int) -> str:
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _describe(status: dict[str, Any], lang: Language) -> tuple[str, str]:
    """The heading and explanation of a status, as the script renders them too."""
    tr = translations(lang.code)
    state = status["state"]
    text = STATES[state]
    detail = tr.gettext(text.detail)
    if state == "partial":
        due = format_btc(msat_to_sat_ceil(status["due_msat"]), lang)
        detail = detail % {"amount": f"{due} BTC"}
    elif state in ("received", "confirming"):
        c = status["confirmations"]
        detail = detail % {"n": c["count"], "total": c["required"]} if c \
            else tr.gettext(NO_COUNT)
    return tr.gettext(text.title), detail


def _amounts(inv: StoreInvoice, lang: Language) -> dict[str, str | None]:
    """The BTC to pay (whole satoshis, rounded up as the on-chain amount is) and, when the
    invoice was asked in another unit, that amount and the rate."""
    tr = translations(lang.code)
    btc = format_btc(msat_to_sat_ceil(inv.due_msat), lang)
    asked = rate = None
    try:
        value = Decimal(inv.amount)
    except InvalidOperation:
        value = None
    if inv.currency == "SATS" and value is not None:
        asked = tr.gettext(SATS) % {"amount": format_number(value, lang)}
    elif inv.currency != "BTC" and value is not None:
        asked = format_fiat(value, inv.currency, lang)
        if inv.rate_minor_per_btc is not None:
            try:
                per_btc = Decimal(inv.rate_minor_per_btc).scaleb(-currency_scale(inv.currency))
                rate = tr.gettext(RATE) % {"rate": format_fiat(per_btc, inv.currency, lang)}
            except (UnsupportedCurrency, KeyError):
                rate = None
    return {"btc": btc, "asked": asked, "rate": rate}


def _not_found(request: Request, lang_query: str | None) -> HTMLResponse:
    lang = choose_language(query=lang_query, invoice_lang=None,
                           accept_language=request.headers.get("accept-language"))
    html = _env(lang.code).get_template("not_found.html").render(
        lang=lang, css_url=_asset_url("checkout.css"))
    return HTMLResponse(html, status_code=404, headers=PAGE_HEADERS)


async def _invoice(session: AsyncSession, invoice_id: str) -> StoreInvoice | None:
    if not INVOICE_ID.fullmatch(invoice_id):  # never hand the database a stray byte
        return None
    return await session.get(StoreInvoice, invoice_id)


# ---------------------------------------------------------------------------------- routes

@router.get("/i/{invoice_id}", response_class=HTMLResponse, include_in_schema=False)
async def checkout_page(
    invoice_id: str, request: Request, session: SessionDep,
    lang: str | None = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> HTMLResponse:
    inv = await _invoice(session, invoice_id)
    if inv is None:
        return _not_found(request, lang)
    metadata = json.loads(inv.metadata_json or "{}")
    language = choose_language(
        query=lang, invoice_lang=metadata.get("lang") if isinstance(metadata, dict) else None,
        accept_language=accept_language)
    store = await session.get(Store, inv.store_id)
    status = await public_status(session, inv)
    pay = status["destinations"]
    tr = translations(language.code)
    title, detail = _describe(status, language)
    messages = {key: tr.gettext(msgid) for key, msgid in SCRIPT_MESSAGES.items()}
    for state, text in STATES.items():
        messages[f"{state}.title"] = tr.gettext(text.title)
        messages[f"{state}.detail"] = tr.gettext(text.detail)
    remaining = int(inv.expires_at.timestamp() - utcnow().timestamp())
    config = {
        "invoice_id": inv.id, "lang": language.tag,
        "status_url": f"/i/{inv.id}/status", "qr_url": f"/i/{inv.id}/qr/",
        "events_url": f"/api/v1/events/stream?invoice_id={inv.id}",
        "events": list(INVOICE_EVENTS), "poll_ms": POLL_MILLISECONDS,
        "redirect_seconds": REDIRECT_SECONDS, "messages": messages, "status": status,
        "duration_s": int((inv.expires_at - inv.created_at).total_seconds()),
    }
    tabs = ["unified", "onchain", "lightning"] if pay["onchain_uri"] and pay["bolt11"] \
        else ["unified"]
    html = _env(language.code).get_template("checkout.html").render(
        lang=language, languages=list(LANGUAGES.values()), inv=inv, status=status, pay=pay,
        store_name=store.name if store else "", amounts=_amounts(inv, language),
        title=title, detail=detail, countdown=_duration(remaining), tabs=tabs,
        config=config, css_url=_asset_url("checkout.css"), js_url=_asset_url("checkout.js"),
        noscript_css_url=_asset_url("noscript.css"), open_states=OPEN_STATES)
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/i/{invoice_id}/status")
async def checkout_status(invoice_id: str, session: SessionDep) -> JSONResponse:
    """The payer's view of an invoice: status, what is still due and where to pay it."""
    inv = await _invoice(session, invoice_id)
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
    inv = await _invoice(session, invoice_id)
    data = qr_data(await live_payment(session, inv), kind) if inv is not None else None
    if data is None:
        raise NotFound(f"no {kind} payment is due on invoice {invoice_id!r}")
    return Response(qr_svg(data, scale=4), media_type="image/svg+xml",
                    headers={"Cache-Control": "private, max-age=30",
                             "X-Content-Type-Options": "nosniff"})


@router.get("/checkout/static/{name}", include_in_schema=False)
async def checkout_asset(name: str) -> Response:
    asset = _assets().get(name)
    if asset is None:
        raise NotFound(f"no checkout asset {name!r}")
    return Response(asset.body, media_type=asset.media_type,
                    headers={"Cache-Control": "public, max-age=86400",
                             "X-Content-Type-Options": "nosniff"})
