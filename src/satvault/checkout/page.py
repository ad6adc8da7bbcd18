"""The hosted checkout page, rendered: ``/i/{id}`` in the payer's language, its not-found
page and the CSS and script it loads (served from this package, versioned by content).

:mod:`satvault.web.routes.checkout` serves them. No third-party script, font or image: the
page talks to its own origin only (:data:`PAGE_HEADERS`' Content-Security-Policy of
``'self'``). Live updates come from the event stream
(``/api/v1/events/stream?invoice_id=…``) when it is there, and from polling
``/i/{id}/status`` every two seconds when it is not.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.checkout.i18n import (
    LANGUAGES,
    N_,
    Language,
    format_btc,
    format_fiat,
    format_number,
    translations,
)
from satvault.checkout.view import (
    FINAL_STATES,
    NO_COUNT,
    OPEN_STATES,
    STATES,
)
from satvault.db import utcnow
from satvault.events.catalog import INVOICE_EVENTS
from satvault.invoices.models import StoreInvoice
from satvault.onchain.bip21 import msat_to_sat_ceil
from satvault.rates.base import currency_scale
from satvault.rates.errors import UnsupportedCurrency

__all__ = ["PAGE_HEADERS", "Asset", "asset", "find_invoice", "render_not_found",
           "render_page"]

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
REDIRECT_SECONDS = 5
POLL_MILLISECONDS = 2000
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
class Asset:
    body: bytes
    media_type: str
    version: str


@cache
def _assets() -> dict[str, Asset]:
    found = {}
    for path in sorted(STATIC_DIR.iterdir()):
        media_type = _TYPES.get(path.suffix)
        if path.is_file() and media_type:
            body = path.read_bytes()
            found[path.name] = Asset(body, media_type,
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


def asset(name: str) -> Asset | None:
    """A static file the page loads (``checkout.css``, ``checkout.js``, ``noscript.css``)."""
    return _assets().get(name)


def render_not_found(lang: Language) -> str:
    return _env(lang.code).get_template("not_found.html").render(
        lang=lang, css_url=_asset_url("checkout.css"))


async def find_invoice(session: AsyncSession, invoice_id: str) -> StoreInvoice | None:
    if not INVOICE_ID.fullmatch(invoice_id):  # never hand the database a stray byte
        return None
    return await session.get(StoreInvoice, invoice_id)


def render_page(inv: StoreInvoice, *, store_name: str, status: dict[str, Any],
                language: Language) -> str:
    """The page of ``inv`` as :func:`satvault.checkout.view.public_status` sees it now."""
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
        "events": sorted(INVOICE_EVENTS), "final_states": sorted(FINAL_STATES),
        "poll_ms": POLL_MILLISECONDS, "redirect_seconds": REDIRECT_SECONDS,
        "messages": messages, "status": status,
        "duration_s": int((inv.expires_at - inv.created_at).total_seconds()),
    }
    tabs = ["unified", "onchain", "lightning"] if pay["onchain_uri"] and pay["bolt11"] \
        else ["unified"]
    return _env(language.code).get_template("checkout.html").render(
        lang=language, languages=list(LANGUAGES.values()), inv=inv, status=status, pay=pay,
        store_name=store_name, amounts=_amounts(inv, language),
        title=title, detail=detail, countdown=_duration(remaining), tabs=tabs,
        config=config, css_url=_asset_url("checkout.css"), js_url=_asset_url("checkout.js"),
        noscript_css_url=_asset_url("noscript.css"), open_states=OPEN_STATES)
