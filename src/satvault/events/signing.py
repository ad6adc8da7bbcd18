"""Webhook signatures: ``Satvault-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The MAC covers the timestamp and the exact body bytes::

    v1 = hex(HMAC-SHA256(key = secret.encode("utf-8"), msg = f"{t}.".encode() + body))

so a receiver can refuse a replay: a captured request re-sent later carries an old ``t``, and
changing ``t`` breaks the MAC. The key is the whole secret string as shown at creation
(``whsec_…``), UTF-8 encoded. A header may carry several ``v1=`` entries: after a rotation
(``POST /api/v1/webhooks/{id}/rotate-secret``) the new secret's first, then the old one's until
the overlap ends; one match is enough. Verify like this, on the raw body, before parsing
it (re-serialised JSON will not match)::

    import hashlib, hmac, time

    def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
        parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
        stamps = [v for k, v in parts if k == "t"]
        macs = [v for k, v in parts if k == "v1"]
        if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()) or not macs:
            return False
        if abs(time.time() - int(stamps[0])) > tolerance:
            return False  # too old (a replay) or from the future
        expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        return any(hmac.compare_digest(expected.encode(), m.encode()) for m in macs)

A replay inside the tolerance window is still possible; receivers that must be exactly-once
keep the ``Satvault-Event-Id`` values they have processed (a redelivery has the same id).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

from satvault.events.errors import InvalidSignature

__all__ = ["SIGNATURE_HEADER", "TOLERANCE_SECONDS", "sign", "verify"]

SIGNATURE_HEADER = "Satvault-Signature"
TOLERANCE_SECONDS = 300


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body,
                    hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes, *, also: Sequence[str] = ()) -> str:
    """The ``Satvault-Signature`` header value for ``body`` sent at ``timestamp``: one ``v1=``
    under ``secret``, then one under each of ``also`` (the secrets a rotation replaced, while
    their overlap lasts)."""
    macs = "".join(f",v1={_mac(s, int(timestamp), body)}" for s in (secret, *also))
    return f"t={int(timestamp)}{macs}"


def verify(secret: str, header: str, body: bytes, *, tolerance: int = TOLERANCE_SECONDS,
           now: float | None = None) -> int:
    """Check a ``Satvault-Signature`` header; returns its timestamp or raises
    :class:`InvalidSignature` (malformed, outside ``tolerance`` seconds of ``now``, or no
    matching MAC)."""
    stamps: list[str] = []
    macs: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            stamps.append(value)
        elif key == "v1":
            macs.append(value)
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()) \
            or len(stamps[0]) > 12:
        raise InvalidSignature("the signature header needs exactly one numeric t=")
    if not macs:
        raise InvalidSignature("the signature header has no v1= signature")
    timestamp = int(stamps[0])
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature(
            f"the signature timestamp is {int(current - timestamp)} s away from now "
            f"(tolerance {tolerance} s): a replay, or a clock that is off")
    expected = _mac(secret, timestamp, body)
    # Bytes, not str: compare_digest refuses non-ASCII str, and the header is attacker input.
    if not any(hmac.compare_digest(expected.encode(), m.encode()) for m in macs):
        raise InvalidSignature("no signature matches this body and secret")
    return timestamp
