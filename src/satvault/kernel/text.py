"""What a one-line text a person gives may hold: a name (a store's, a merchant's), a label, an
identifier. Found from outside: a store name took a newline, terminal escapes and a
right-to-left override, and it is shown on the public checkout page, the dashboards and in
exports. Refused here, whoever writes the text (API, dashboard, CLI):

* control characters (C0, DEL, C1): line breaks, escapes;
* the line and paragraph separators U+2028 and U+2029, which many viewers break lines at;
* the bidirectional embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069) and
  the Arabic letter mark (U+061C), which reorder what is shown after them ("Trojan Source");
* the byte order mark / zero-width no-break space U+FEFF, and every other format character
  (zero-width space, word joiner, soft hyphen, tags …) and the fillers that draw nothing.

The marks U+200E and U+200F and the zero-width joiners stay: scripts and emoji need them.

Not for a KYC record's name: that is kept as the reviewer typed it and screened with such
characters taken out, and as shown where a direction override reorders it
(``satvault.kyc.screening``), so that an evasion attempt is caught and recorded, not turned
away unseen. Reasons and notes take line breaks and tabs: :func:`free_text`.
"""

from __future__ import annotations

import re

from satvault.kernel.errors import InvalidInput

__all__ = ["NOT_IN_FREE_TEXT", "NOT_IN_ONE_LINE", "ONE_LINE_PATTERN", "free_text", "one_line"]

# Controls (C0, DEL, C1) but tab, line feed and carriage return; then those three.
_CONTROLS_BUT_BREAKS = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"
_BREAKS = "\\t\\n\\r"
_INVISIBLE = (
    "\\u2028\\u2029"  # line and paragraph separators
    # format characters (Unicode's Cf) but the marks and joiners scripts need (U+200C to
    # U+200F): direction controls, zero-width space and word joiner, soft hyphen, the BOM,
    # interlinear annotations, tag characters (found from outside: U+200B, U+2060, U+00AD,
    # U+FFF9 and tags made names that show nothing, or hide text)
    "\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890\\u0891\\u08e2\\u180e\\u200b"
    "\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u206f\\ufeff\\ufff9-\\ufffb"
    "\\U000110bd\\U000110cd\\U00013430-\\U0001343f\\U0001bca0-\\U0001bca3"
    "\\U0001d173-\\U0001d17a\\U000e0001\\U000e0020-\\U000e007f"
    # letters and marks that draw nothing: Hangul fillers, the grapheme joiner
    "\\u034f\\u115f\\u1160\\u3164\\uffa0"
)
_REFUSED = _CONTROLS_BUT_BREAKS + _BREAKS + _INVISIBLE
ONE_LINE_PATTERN = f"^[^{_REFUSED}]*$"
"""The pattern of such a text (for request schemas, so the OpenAPI document says it too)."""
NOT_IN_ONE_LINE = re.compile(f"[{_REFUSED}]")


# The same but for the tabs and line breaks a reason or a note may hold.
NOT_IN_FREE_TEXT = re.compile(f"[{_CONTROLS_BUT_BREAKS}{_INVISIBLE}]")


def _refuse(refused: re.Pattern[str], value: str, what: str, kinds: str) -> str:
    found = refused.search(value)
    if found is not None:
        raise InvalidInput(f"{what} may not contain U+{ord(found.group()):04X} ({kinds})")
    return value


def one_line(value: str, what: str) -> str:
    """``value`` if it holds none of the characters above; else :class:`InvalidInput`
    naming ``what`` and the first such character's code point."""
    return _refuse(NOT_IN_ONE_LINE, value, what,
                   "a control, line-separating or text-direction character")


def free_text(value: str, what: str) -> str:
    """``value`` if it holds none of the characters above but tabs and line breaks (a
    reason, a note: found from outside, a wallet's freeze reason took a right-to-left
    override); else :class:`InvalidInput`, as :func:`one_line`."""
    return _refuse(NOT_IN_FREE_TEXT, value, what,
                   "a control, text-direction or invisible character")
