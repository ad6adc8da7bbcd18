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

__all__ = ["MAX_DEPTH", "clip", "depth", "loads"]

# How deep a JSON document may nest objects and arrays: the edge refuses deeper bodies
# (``satvault.web.guard``), and :func:`clip` cuts stored values there.
MAX_DEPTH = 32


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


def depth(value: Any) -> int:
    """How many objects and arrays deep ``value`` nests (iterative: no recursion limit)."""
    deepest, stack = 0, [(1, value)]
    while stack:
        level, item = stack.pop()
        children = item.values() if isinstance(item, dict) else \
            item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((level + 1, v) for v in children)
    return deepest


def clip(value: Any, limit: int = MAX_DEPTH) -> Any:
    """``value`` with every object or array at nesting level ``limit`` replaced by its JSON
    text: a value stored before the edge refused deep documents, shown without losing any
    of it (serializers stop at a depth). Unchanged when it nests no deeper than ``limit``."""
    if depth(value) <= limit:
        return value

    def cut(item: Any, level: int) -> Any:
        if not isinstance(item, dict | list):
            return item
        if level == limit:
            return json.dumps(item, ensure_ascii=False)
        if isinstance(item, dict):
            return {k: cut(v, level + 1) for k, v in item.items()}
        return [cut(v, level + 1) for v in item]

    return cut(value, 1)
