"""Messages the merchant pages compose in Python (form errors, chart titles): marked with
:func:`N_` for extraction, translated at render time with :func:`translate` (plain text, so
the template still escapes it)."""

from __future__ import annotations

from functools import cache

from babel.support import Translations

from satvault.checkout.i18n import Language, translations

__all__ = ["N_", "translate"]


def N_(text: str) -> str:
    """Marks ``text`` for the catalogs; translated later by :func:`translate`."""
    return text


@cache
def _catalog(code: str) -> Translations:
    return translations(code)


def translate(lang: Language, text: str) -> str:
    """``text`` in the page's language (unchanged when the catalog does not have it yet)."""
    return str(_catalog(lang.code).gettext(text))
