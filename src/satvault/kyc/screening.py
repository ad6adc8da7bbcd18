"""Sanctions and PEP screening of names against operator-loaded lists.

Matching is on a normal form: Unicode NFKD with every mark (combining or not: a variation
selector too), the invisible format characters (zero-width space and joiners, soft hyphen)
and the blank letters (Hangul fillers, the Braille blank) dropped (``José`` → ``jose``),
private-use and unassigned characters dropped too, look-alikes of Latin letters folded to them
(``John`` typed with a Cyrillic ``o`` or in Lisu letters is ``john``; a letter with a stroke
Unicode does not decompose, ``Ł`` or ``ø``, is its letter): Unicode's confusables (UTS #39,
from ``confusable_homoglyphs``) for every character one of them names a Latin letter for, and a
table of our own for Cyrillic, Greek, Armenian, small capitals and IPA letters the
confusables leave out or read otherwise; case-folded, anything not a letter or digit (of any
script) a space, tokens sorted and each kept once (``Doe, John``, ``JOHN DOE`` and ``John Doe
Doe`` are the same name: a word said twice adds nothing to who is named). The score
(0-100) is the better of difflib's ratio on the sorted tokens and on the tokens both names
share against the shorter name (a listed ``John Doe`` still scores high against ``John Albert
Doe``); a score at or over ``Settings.kyc_screening_threshold`` is a hit. Simple and
explainable; not a replacement for a vendor's screening where the law asks for one.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache

from confusable_homoglyphs.confusables import confusables_data
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.db import utcnow
from satvault.kyc.errors import InvalidKycInput
from satvault.kyc.models import ScreeningEntry, ScreeningList

__all__ = ["Hit", "as_shown", "load_list", "normalize", "parse_csv", "score", "screen_name"]

# Anything but a letter or digit (of any script) separates tokens.
_NOT_WORD = re.compile(r"[\W_]+")
# Cyrillic and Greek letters that look like Latin ones (Unicode's confusables), by their
# case-folded form: each goes to the Latin letter its upper or lower case is mistaken for, so
# a name is the same whichever of the look-alikes it is typed with. Found from outside: a
# listed "John Doe" typed with a Cyrillic o and e scored 62 and was approved, and a name in a
# script other than Latin normalised to nothing and could not be recorded at all; a zero-width
# space inside "John" split it in two (score 71), so invisible format characters are dropped.
_CYRILLIC = ("\u0430\u0432\u0435\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443"
             "\u0445\u0455\u0456\u0458\u04bb\u0501\u051b\u051d\u04cf\u04af",
             "abekmhopctyxsijhdqwly")
_GREEK = ("\u03b1\u03b2\u03b5\u03b6\u03b7\u03b9\u03ba\u03bc\u03bd\u03bf\u03c1\u03c4"
          "\u03c5\u03c7", "abezhikmnoptyx")
# And the others Unicode's confusables name for a Latin letter (found from outside: a listed
# "John Doe" with an Armenian oh or a small capital O scored 75, "Anna Smith" with a Latin
# alpha and a dotless i 22, all approved): Latin's own small capitals and IPA letters, Greek
# sigma (the lunate one is a sigma after NFKD) and yot, Armenian oh, seh, vo, ho, co, za.
_OTHER = ("\u0131\u0237\u0251\u0261\u0269\u026a\u028f\u029c\u0274\u0280\u0299\u0262"
          "\u029f\u1d00\u1d04\u1d05\u1d07\u1d0a\u1d0b\u1d0d\u1d0f\u1d18\u1d1b\u1d1c"
          "\u1d20\u1d21\u1d22\ua731\u03c3\u03f3\u0585\u057d\u0578\u0570\u0581\u0566",
          "ijagiiyhnrbglacdejkmoptuvwzsojounhgq")
_OURS = {ord(a): b for a, b in zip(_CYRILLIC[0] + _GREEK[0] + _OTHER[0],
                                   _CYRILLIC[1] + _GREEK[1] + _OTHER[1], strict=True)}


def _bare(text: str) -> str:
    """``text`` decomposed, without its marks, case-folded: ``L̸`` is ``l``."""
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if unicodedata.category(c)[0] != "M").casefold()


@cache
def _lookalikes() -> dict[int, str]:
    """Every character besides ASCII that Unicode's confusables (UTS #39) name a Latin letter
    or letters for, once decomposed (``Ł`` is ``L`` with a stroke: ``l``; ``æ`` is ``ae``;
    a Lisu Ja is ``J``: ``j``), then ours on top (where the confusables read a letter
    otherwise, Greek ``η`` as ``n``, ours has decided since migration 0049). The shortest
    reading wins, then the first in the alphabet, so the table is the same on every run.
    Found from outside: Polish, Danish and Serbian letters kept their strokes (a listed
    ``Lukasz Nowak`` scored 42 against ``Łukasz Nowak``, approved), and ``John Smith`` in Lisu
    letters scored 10."""
    table: dict[int, str] = {}
    for char, glyphs in confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        readings = {_bare(g["c"]) for g in glyphs}
        latin = sorted((r for r in readings if r and r.isascii() and r.isalpha()),
                       key=lambda r: (len(r), r))
        if latin:
            table[ord(char)] = latin[0]
    table.update(_OURS)
    return table


# Letters and symbols that show nothing (Hangul fillers, the Braille blank): dropped like the
# format characters, not read as a letter or a space.
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


# Format, private-use and unassigned characters: nothing a name is read by (a private-use
# character inside "John" split it in two, score 76, approved; found from outside).
_DROPPED = frozenset({"Cf", "Co", "Cn"})


def _shown(c: str) -> bool:
    """Whether ``c`` is kept: not a mark (every mark, not only those with a combining class:
    a variation selector or the combining grapheme joiner has none, shows nothing, and
    inside a word split it in two, score 71, approved), not a format, private-use or
    unassigned character, not a blank."""
    category = unicodedata.category(c)
    return category[0] != "M" and category not in _DROPPED and c not in _BLANKS


# The embeddings and overrides (LRE, RLE, LRO, RLO), each closed by a PDF or the text's end.
# A right-to-left override draws what it spans backwards: "\u202eeoD nhoJ" is stored as
# "eoD nhoJ" and shown as "John Doe" (found from outside: screened as stored, approved).
_RLO, _PDF = "\u202e", "\u202c"
_PUSHES = frozenset("\u202a\u202b\u202d\u202e")


def as_shown(name: str) -> str:
    """``name`` in the order a reader sees its letters: every span a right-to-left override
    forces drawn backwards (nested spans each in turn). The rest of the bidirectional
    algorithm moves whole words, which the sorted tokens do not see."""
    spans: list[list[str]] = [[]]
    pushed: list[str] = []

    def close() -> None:
        inner = "".join(spans.pop())
        spans[-1].append(inner[::-1] if pushed.pop() == _RLO else inner)

    for c in name:
        if c in _PUSHES:
            pushed.append(c)
            spans.append([])
        elif c == _PDF and pushed:
            close()
        else:
            spans[-1].append(c)
    while pushed:
        close()
    return "".join(spans[0])


def normalize(name: str) -> str:
    """Case-, diacritics-, look-alike-, invisible- and punctuation-insensitive form, tokens
    sorted, each once."""
    text = unicodedata.normalize("NFKD", name)
    # Folded before and after case-folding: a capital look-alike (Greek Eta, ``H``) reads as
    # its capital, a small one (``η``, our ``h``) as ours, and a letter case-folding makes
    # is folded too. What a fold brings is decomposed again, its marks dropped.
    lookalikes = _lookalikes()
    text = "".join(c for c in text if _shown(c)).translate(lookalikes).casefold()
    text = _bare(text.translate(lookalikes))
    return _words(t for t in _NOT_WORD.split(text) if t)


def _words(tokens: Iterable[str]) -> str:
    """The distinct tokens, sorted, joined by one space.

    Found from outside: the normal form kept a repeated word, and the score compared the
    names' token *sets* but scored the shared tokens against the raw name, so "John Smith
    Smith" or "Smith John Smith" (a listed "John Smith") scored 77 and was approved."""
    return " ".join(sorted(set(tokens)))


def score(a: str, b: str) -> int:
    """Token-based fuzzy score of two *normalised* names, 0-100."""
    # A listed name stored before the form kept each word once may still repeat one.
    a, b = _words(a.split()), _words(b.split())
    if not a or not b:
        return 0
    whole = SequenceMatcher(None, a, b).ratio()
    ta, tb = set(a.split()), set(b.split())
    common = " ".join(sorted(ta & tb))
    shorter = a if len(ta) <= len(tb) else b
    part = SequenceMatcher(None, common, shorter).ratio() if common else 0.0
    # Sharing a single token (a common first name) is not a match on its own.
    if len(ta & tb) < min(2, len(ta), len(tb)):
        part = 0.0
    return round(100 * max(whole, part))


@dataclass(frozen=True, slots=True)
class Hit:
    list: str
    name: str
    reference: str
    score: int

    def as_dict(self) -> dict[str, object]:
        return {"list": self.list, "name": self.name, "reference": self.reference,
                "score": self.score}


async def screen_name(session: AsyncSession, name: str, *, threshold: int) -> list[Hit]:
    """Every listed name scoring at least ``threshold`` against ``name``, best first: the
    name as stored and, when a direction override reorders it, as shown (the better
    score)."""
    probe = normalize(name)
    if not probe:
        raise InvalidKycInput("a name to screen is required")
    probes = {probe, normalize(as_shown(name))}
    rows = (await session.execute(select(ScreeningEntry.list, ScreeningEntry.name,
                                         ScreeningEntry.reference,
                                         ScreeningEntry.normalized))).all()
    hits = [Hit(str(r.list), r.name, r.reference, s) for r in rows
            if (s := max(score(p, r.normalized) for p in probes)) >= threshold]
    return sorted(hits, key=lambda h: -h.score)


def parse_csv(text: str) -> list[tuple[str, str]]:
    """(name, reference) rows of a CSV with a ``name`` column (and optionally ``reference``
    or ``id``); a file without a header row is read as one name per line."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise InvalidKycInput("the list is empty")
    header = [h.strip().lower() for h in rows[0]]
    if "name" in header:
        ni = header.index("name")
        ri = next((header.index(k) for k in ("reference", "id") if k in header), None)
        out = [(r[ni].strip(), r[ri].strip() if ri is not None and ri < len(r) else "")
               for r in rows[1:] if len(r) > ni and r[ni].strip()]
    else:
        out = [(r[0].strip(), "") for r in rows if r and r[0].strip()]
    if not out:
        raise InvalidKycInput("the list has no names")
    return out


async def load_list(session: AsyncSession, which: ScreeningList,
                    entries: list[tuple[str, str]]) -> int:
    """Replace the ``which`` list with ``entries``; the number of names loaded."""
    await session.execute(delete(ScreeningEntry).where(ScreeningEntry.list == which))
    now = utcnow()
    session.add_all(ScreeningEntry(list=which, name=n[:300], normalized=normalize(n)[:300],
                                   reference=ref[:120], loaded_at=now) for n, ref in entries)
    await session.flush()
    return len(entries)
