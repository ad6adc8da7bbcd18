"""Rendering a page: one Jinja2 environment per language (the checkout page's Babel catalogs,
:mod:`satvault.checkout.i18n`), the layout's context, and the headers every page carries.

Templates write English inside ``{{ _("…") }}`` / ``{% trans %}``; the catalog translates,
and a string not yet translated shows in English. Amounts are integers (msat or sat) until
the template formats them for the page's locale with the filters registered here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from babel.dates import format_datetime
from babel.numbers import format_decimal
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from satvault.auth.sessions import SessionView
from satvault.checkout.i18n import LANGUAGES, N_, Language, format_btc, translations
from satvault.kernel.text import NOT_IN_ONE_LINE
from satvault.onchain.bip21 import msat_to_sat_ceil
from satvault.web.pages.assets import asset_url

__all__ = ["PAGE_HEADERS", "render"]

HERE = Path(__file__).parent
# Pages load and talk to this origin only; no inline script runs (the CSRF token and the
# strings scripts need travel in <meta> and data- attributes). Forms post to this origin.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _sats(msat: int | None, lang: Language) -> str:
    """msat as whole sats (rounded toward zero: a balance is never shown larger than it is)."""
    if msat is None:
        return ""
    sat = int(msat) // 1000 if msat >= 0 else -((-int(msat)) // 1000)
    return format_decimal(Decimal(sat), locale=lang.locale)


def _sats_due(msat: int | None, lang: Language) -> str:
    """An amount owed in whole sats, rounded up as its payer is asked for it (BIP21, the
    checkout page): found from outside, the dashboard showed an invoice of 16,835,017 msat
    as 16,835 sats where its payer was asked for 16,836."""
    if msat is None:
        return ""
    return format_decimal(Decimal(msat_to_sat_ceil(int(msat))), locale=lang.locale)


def _btc(msat: int | None, lang: Language) -> str:
    if msat is None:
        return ""
    sign, sat = ("-", -int(msat) // 1000) if msat < 0 else ("", int(msat) // 1000)
    return sign + format_btc(sat, lang)


def _number(value: int | Decimal | None, lang: Language) -> str:
    return "" if value is None else format_decimal(value, locale=lang.locale)


def _when(value: datetime | str | None, lang: Language) -> str:
    """A moment for the page's locale; an ISO 8601 string (the services' dicts) too."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    # In UTC and saying so: operators compare these with logs, the chain and other offices.
    return format_datetime(value, format="medium", tzinfo=UTC, locale=lang.locale) + " UTC"


# How a payment rail (a withdrawal's method, a statement's way) reads on a page.
RAILS = {"onchain": N_("On-chain"), "lightning": N_("Lightning"), "internal": N_("Internal")}


def _rail(value: object, code: str) -> str:
    key = str(getattr(value, "value", value))
    return translations(code).gettext(RAILS[key]) if key in RAILS else key


def controls_shown(text: str) -> str:
    """``text`` with every control, line-separating, direction or invisible character
    written out as ``⟨U+202E⟩``: for text kept as a person typed it (a KYC record's name),
    which a reviewer must read as stored (found from outside: "\u202eeoD nhoJ" showed as a
    listed name), not as it would draw."""
    return NOT_IN_ONE_LINE.sub(lambda m: f"\u27e8U+{ord(m.group()):04X}\u27e9", text)


@cache
def _env(code: str) -> Environment:
    """One environment per language, so concurrent requests never share a catalog."""
    lang = LANGUAGES[code]
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(("html",)), undefined=StrictUndefined,
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(  # type: ignore[attr-defined]
        translations(code), newstyle=True)
    env.filters["sats"] = lambda v: _sats(v, lang)
    env.filters["sats_due"] = lambda v: _sats_due(v, lang)
    env.filters["btc"] = lambda v: _btc(v, lang)
    env.filters["number"] = lambda v: _number(v, lang)
    env.filters["when"] = lambda v: _when(v, lang)
    env.filters["rail"] = lambda v: _rail(v, code)
    env.filters["controls_shown"] = controls_shown
    env.globals["asset_url"] = asset_url
    env.globals["languages"] = list(LANGUAGES.values())
    return env


def render(request: Request, template: str, *, lang: Language,
           view: SessionView | None = None, status_code: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """The page ``template`` in ``lang``, for the signed-in ``view`` (None: signed out)."""
    page = _env(lang.code).get_template(template)
    html = page.render(request=request, lang=lang, view=view,
                       csrf_token=view.csrf_token if view else "",
                       path=request.url.path, **context)
    return HTMLResponse(html, status_code=status_code, headers={**PAGE_HEADERS,
                                                                 **(headers or {})})
