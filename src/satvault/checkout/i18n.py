"""Languages of the checkout page: which one a visitor gets, its catalog, and how amounts read.

Catalogs are the ``.po`` files under ``locale/<code>/LC_MESSAGES/messages.po``, read once per
process with :mod:`babel.messages.pofile` and compiled in memory: there is no separate compile
step and no ``.mo`` file to forget. To add or change a string, edit the code or template, then::

    make catalogs

(``pybabel extract`` over this package and :mod:`satvault.web.pages`, then ``pybabel
update`` of every language)
and translate the new entries; ``tests/checkout`` fails while any is missing. The dashboard
and the admin console use the same catalogs.

The language is, in order: ``?lang=``, the invoice's ``metadata.lang``, the browser's
``Accept-Language`` (negotiated with :func:`babel.negotiate_locale`), English.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

from babel import Locale, negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import NumberPattern, format_currency, format_decimal
from babel.support import Translations

from satvault.rates.base import currency_scale
from satvault.rates.errors import UnsupportedCurrency

__all__ = ["DEFAULT", "LANGUAGES", "N_", "Language", "choose_language", "format_btc",
           "format_fiat", "format_number", "match_language", "parse_accept_language",
           "translations"]

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
SAT_PER_BTC = 100_000_000


def N_(message: str) -> str:
    """Marks a string for extraction; it is translated later, where the language is known."""
    return message


@dataclass(frozen=True, slots=True)
class Language:
    code: str  # the catalog's folder and the ?lang= value
    tag: str  # BCP 47, for <html lang> and the browser's Intl formatting
    locale: str  # Babel's locale for numbers and currencies
    name: str  # its own name, for the language switcher


LANGUAGES: dict[str, Language] = {lang.code: lang for lang in (
    Language("en", "en", "en", "English"),
    Language("zh", "zh-Hans", "zh_Hans_CN", "简体中文"),
    Language("ja", "ja", "ja", "日本語"),
    Language("nl", "nl", "nl", "Nederlands"),
    Language("th", "th", "th", "ไทย"),
    Language("fr", "fr", "fr", "Français"),
)}
DEFAULT = LANGUAGES["en"]


@cache
def translations(code: str) -> Translations:
    """The catalog of a language in :data:`LANGUAGES`, compiled from its ``.po`` in memory."""
    if code not in LANGUAGES:
        raise KeyError(f"no checkout catalog for {code!r}")
    path = LOCALE_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as po:
        catalog = read_po(po, locale=LANGUAGES[code].locale, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)  # a fuzzy guess is shown as English instead
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def parse_accept_language(header: str | None, *, limit: int = 16) -> list[str]:
    """Language tags from an ``Accept-Language`` header, most wanted first (q=0 dropped)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")[:limit]):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*" or len(tag) > 35:
            continue
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if weight > 0:
            ranked.append((-weight, position, tag))
    return [tag for _, _, tag in sorted(ranked)]


def match_language(tags: Iterable[str]) -> Language | None:
    """The first of ``tags`` (``zh-CN``, ``fr_BE``, ``ja``…) that a catalog serves."""
    preferred = [t.strip().replace("-", "_") for t in tags if t and 0 < len(t.strip()) <= 35]
    got = negotiate_locale(preferred, list(LANGUAGES), sep="_")
    return LANGUAGES.get(got.split("_")[0].lower()) if got else None


def choose_language(*, query: str | None, invoice_lang: object,
                    accept_language: str | None) -> Language:
    for tags in ([query] if query else [],
                 [invoice_lang] if isinstance(invoice_lang, str) else [],
                 parse_accept_language(accept_language)):
        lang = match_language(tags[:16])
        if lang is not None:
            return lang
    return DEFAULT


def format_btc(sat: int, lang: Language) -> str:
    """Satoshis as BTC with eight decimals in the language's digits and separators."""
    whole, frac = divmod(sat, SAT_PER_BTC)
    return format_decimal(Decimal(f"{whole}.{frac:08d}"), format="#,##0.00000000",
                          locale=lang.locale)


def format_fiat(amount: Decimal, currency: str, lang: Language) -> str:
    """``amount`` in the reader's locale with as many decimals as the platform prices
    ``currency`` in (:data:`~satvault.rates.base.CURRENCY_SCALES`), not CLDR's: found from
    outside, an invoice of 1,234.567 IQD (three decimals here, none in CLDR) showed
    "IQD1,235", rounded up, and its rate lost its decimals."""
    try:
        scale = currency_scale(currency)
    except UnsupportedCurrency:  # never priced here: CLDR's decimals
        return format_currency(amount, currency, locale=lang.locale)
    return str(_currency_pattern(lang.locale, scale).apply(
        amount, _locale(lang.locale), currency=currency, currency_digits=False))


@cache
def _locale(code: str) -> Locale:
    return Locale.parse(code)


@cache
def _currency_pattern(code: str, scale: int) -> NumberPattern:
    """The locale's currency pattern with exactly ``scale`` decimals."""
    pattern: NumberPattern = copy.copy(_locale(code).currency_formats["standard"])
    pattern.frac_prec = (scale, scale)
    return pattern


def format_number(value: Decimal, lang: Language) -> str:
    return format_decimal(value, locale=lang.locale)
