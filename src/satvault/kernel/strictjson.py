"""JSON as RFC 8259 defines it, for documents read from files.

Python's :func:`json.loads` also accepts ``NaN``, ``Infinity`` and ``-Infinity``, and turns a
number too large for a float (``1e400``) into infinity; code that then calls ``int()`` on
such a value meets an ``OverflowError`` instead of a clear refusal (found from outside in a
backup's manifest). :func:`loads` refuses all of them with a :class:`ValueError`, the error
every caller already catches for "not JSON" (``json.JSONDecodeError`` is one too).

:func:`foreign` parses what another system sent (a node, a rate source, an LNURL service):
JSON nested deeper than the parser recurses raises ``RecursionError``, which is no
``ValueError`` and so escaped every "not JSON" handler as a crash (found from outside: an
LNURL service answering ~100k levels deep made a withdrawal a 500); it becomes a
``ValueError`` too, and a ``max_depth`` refuses anything deeper than a caller keeps.

:data:`StrictInt`, :data:`StrictBool` and :data:`STRICT_BODY` are the JSON a request body may
carry, for the pydantic models of every package (the web layer's fields and the events'
webhook bodies alike)."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import ConfigDict, Strict

__all__ = ["MAX_DEPTH", "STRICT_BODY", "StrictBool", "StrictInt", "clip", "depth", "foreign",
           "loads"]

StrictInt = Annotated[int, Strict()]
"""A JSON integer (``"10"``, ``10.0``, ``1e3`` and ``true`` refused); its field bounds it."""

StrictBool = Annotated[bool, Strict()]
"""A JSON ``true`` or ``false``: never ``"yes"``, ``"true"`` or ``1`` (found from outside:
``{"enabled": "yes"}`` enabled a webhook)."""

STRICT_BODY = ConfigDict(extra="forbid")
"""The model config of a body that changes something (a PATCH above all): a field it does not
have is refused, not ignored, so a client never believes it set what nothing read (found from
outside: ``{"secret": …}`` on a webhook's PATCH answered 200 and changed nothing)."""

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
    return foreign(text, parse_constant=_no_constant, parse_float=_finite)


def foreign(text: str | bytes, *, max_depth: int | None = None, **options: Any) -> Any:
    """:func:`json.loads` (with ``options``) for text from outside: ``ValueError``, never
    ``RecursionError``, for a document nested past the interpreter's recursion limit, and
    for one nesting more than ``max_depth`` objects and arrays when that is given."""
    try:
        value = json.loads(text, **options)
    except RecursionError as exc:
        raise ValueError("the JSON document nests too deep") from exc
    if max_depth is not None and depth(value) > max_depth:
        raise ValueError(f"the JSON document nests more than {max_depth} deep")
    return value


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
