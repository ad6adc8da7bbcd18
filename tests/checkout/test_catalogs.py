"""The message catalogs: every string the checkout page, the dashboard and the admin console
show is in the template file and translated in every language, with the same placeholders;
nothing stale is left behind (``make catalogs`` extracts and merges)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

import satvault.checkout
import satvault.web.pages
from satvault.checkout.i18n import LANGUAGES, translations

PACKAGE = Path(satvault.checkout.__file__).parent
PAGES = Path(satvault.web.pages.__file__).parent
LOCALE = PACKAGE / "locale"
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def extracted() -> set[str]:
    found = set()
    for where in (PACKAGE, PAGES):
        for _file, _line, message, _comments, _context in extract_from_dir(
                str(where), METHODS, options_map={"**.html": {}}):
            assert isinstance(message, str), "no plural messages are used"
            found.add(message)
    return found


def catalog(path: Path):
    with path.open("rb") as f:
        return read_po(f)


def test_template_matches_the_code():
    messages = extracted()
    assert len(messages) > 30
    pot = {m.id for m in catalog(LOCALE / "messages.pot") if m.id}
    assert pot == messages, {"missing": messages - pot, "stale": pot - messages}


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_every_language_is_complete(code: str):
    messages = extracted()
    po = catalog(LOCALE / code / "LC_MESSAGES" / "messages.po")
    entries = {m.id: m for m in po if m.id}
    assert set(entries) == messages, {"missing": messages - set(entries),
                                      "stale": set(entries) - messages}
    for msgid, entry in entries.items():
        assert not entry.fuzzy, msgid
        if code == "en":
            continue
        assert entry.string, f"{code}: {msgid!r} is not translated"
        assert sorted(PLACEHOLDER.findall(entry.string)) == sorted(PLACEHOLDER.findall(msgid)), \
            (code, msgid, entry.string)
        # No stray %: a literal percent sign is written %% in msgid and translation alike.
        assert "%" not in PLACEHOLDER.sub("", entry.string).replace("%%", ""), (code,
                                                                                entry.string)
        assert entry.string.count("%%") == msgid.count("%%"), (code, msgid, entry.string)


def test_catalogs_load_without_a_compile_step():
    assert translations("en").gettext("Copy") == "Copy"
    assert translations("zh").gettext("Copy") == "复制"
    assert translations("th").gettext("Copy") == "คัดลอก"
    with pytest.raises(KeyError):
        translations("de")
