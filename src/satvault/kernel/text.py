"""What a one-line text a person gives may hold: a name (a store's, a merchant's), a label, an
identifier. Found from outside: a store name took a newline, terminal escapes and a
right-to-left override, and it is shown on the public checkout page, the dashboards and in
exports. Refused here, whoever writes the text (API, dashboard, CLI):

* control characters (C0, DEL, C1): line breaks, escapes;
* the line and paragraph separators U+2028 and U+2029, which many viewers break lines at;
* the bidirectional embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069) and
  the Arabic letter mark (U+061C), which reorder what is shown after them ("Trojan Source");
* the byte order mark / zero-width no-break space U+FEFF.

The marks U+200E and U+200F and the zero-width joiners stay: scripts and emoji need them.
"""

from __future__ import annotations

import re

from satvault.kernel.errors import InvalidInput

__all__ = ["NOT_IN_ONE_LINE", "ONE_LINE_PATTERN", "one_line"]

_REFUSED = "\\x00-\\x1f\\x7f-\\x9f\\u061c\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069\\ufeff"
ONE_LINE_PATTERN = f"^[^{_REFUSED}]*$"
"""The pattern of such a text (for request schemas, so the OpenAPI document says it too)."""
NOT_IN_ONE_LINE = re.compile(f"[{_REFUSED}]")


def one_line(value: str, what: str) -> str:
    """``value`` if it holds none of the characters above; else :class:`InvalidInput`
    naming ``what`` and the first such character's code point."""
    found = NOT_IN_ONE_LINE.search(value)
    if found is not None:
        raise InvalidInput(f"{what} may not contain U+{ord(found.group()):04X} (a control, "
                           "line-separating or text-direction character)")
    return value
