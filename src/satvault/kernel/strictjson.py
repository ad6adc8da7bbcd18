"""JSON as RFC 8259 defines it, for documents read from files.

Python's :func:`json.loads` also accepts ``NaN``, ``Infinity`` and ``-Infinity``, and turns a
number too large for a float (``1e400``) into infinity; code that then calls ``int()`` on
such a value meets an ``OverflowError`` instead of a clear refusal (found from outside in a
backup's manifest). :func:`loads` refuses all of them with a :class:`ValueError`, the error
every caller already catches for "not JSON" (``json.JSONDecodeError`` is one too)."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["loads"]


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def loads(text: str | bytes) -> Any:
    """:func:`json.loads` without ``NaN``/``Infinity`` and without numbers that overflow a
    float; ``ValueError`` for those and for anything that is not JSON."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
