"""Field types shared by the request schemas: strict integers for money and counts, and text
limited by its UTF-8 size.

Every integer in a request body is strict: JSON ``1000`` only, never ``"1000"``, ``1000.0`` or
``true`` (which lax parsing turns into 1). Every one is bounded, so no value can overflow a
64-bit database column. Descriptions that end up in a BOLT11 invoice are limited by encoded
bytes, not characters: :data:`MEMO_MAX_BYTES` (639, the most a BOLT11 ``d`` field holds)
bytes of UTF-8, so 256 emoji (1,024 bytes) are refused here rather than by the node.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query
from pydantic import AfterValidator, BeforeValidator, Field, Strict

from satvault.kernel.strictjson import STRICT_BODY, StrictBool, StrictInt
from satvault.kernel.text import ONE_LINE_PATTERN

__all__ = ["INT64_MAX", "MAX_MSAT", "MEMO_MAX_BYTES", "STRICT_BODY", "EventIdBefore", "Memo",
           "Msat", "SingleLine", "SpeedPolicy", "StrictBool", "StrictCount", "StrictInt",
           "utf8_at_most"]

INT64_MAX = 2**63 - 1
MAX_MSAT = 21_000_000 * 10**11  # all the bitcoin there will ever be, in msat
MEMO_MAX_BYTES = 639

Msat = Annotated[int, Strict(), Field(gt=0, le=MAX_MSAT)]
"""A positive amount in msat: a JSON integer, at most 21 million BTC."""

StrictCount = Annotated[int, Strict(), Field(ge=0, le=INT64_MAX)]
"""A non-negative JSON integer that fits a 64-bit column."""

EventIdBefore = Annotated[int | None, Query(ge=1, le=INT64_MAX, description="an event id")]
"""``?before=``, a page of a delivery log: an event id, so one that fits a 64-bit column (the
API's list and the dashboard's page read the same type)."""



SingleLine = Annotated[str, Field(pattern=ONE_LINE_PATTERN)]
"""Text that is one line with no control character: an identifier, a URL or a name a client
gives (an order id, a redirect URL, a store's name), where a newline, a control character
or a text-direction override is never meant and would travel on into logs, exports, links
and pages (found from outside: they were stored; :mod:`satvault.kernel.text` says which).
A pattern, so the OpenAPI document says it too."""


def _json_integer(value: object) -> object:
    # Literal[...] has no strict mode: refuse true and 1.0 before they compare equal to 1.
    if type(value) is not int:
        raise ValueError("must be a JSON integer")
    return value


SpeedPolicy = Annotated[Literal[0, 1, 2, 6], BeforeValidator(_json_integer)]
"""Confirmations before an on-chain payment settles an invoice (a JSON integer)."""


def utf8_at_most(limit: int) -> AfterValidator:
    def check(value: str) -> str:
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise ValueError(f"at most {limit} bytes of UTF-8 (this is {size})")
        return value

    return AfterValidator(check)


Memo = Annotated[str, Field(max_length=MEMO_MAX_BYTES, description=(
    f"At most {MEMO_MAX_BYTES} bytes of UTF-8 (a BOLT11 description's limit).")),
    utf8_at_most(MEMO_MAX_BYTES)]
"""A description that may become a BOLT11 invoice's: at most 639 bytes of UTF-8."""
