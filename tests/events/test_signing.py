"""Signatures: what :func:`sign` produces verifies with an independent HMAC written here (as a
receiver would write it), and :func:`verify` refuses replays, tampering and malformed
headers."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from satvault.events.errors import InvalidSignature
from satvault.events.signing import sign, verify

SECRET = "whsec_abcdefghijklmnopqrstuvwxyz012345"
BODY = b'{"id":7,"type":"invoice.settled","created_at":"2026-11-21T12:00:00+00:00","data":{}}'
T = 1_795_000_000


def receiver_verify(secret: str, header: str, body: bytes, now: int,
                    tolerance: int = 300) -> bool:
    """A receiver's own implementation, from the documentation only."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = fields["t"]
    if abs(now - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def test_header_format_and_independent_verification():
    header = sign(SECRET, T, BODY)
    mac = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={mac}"
    assert receiver_verify(SECRET, header, BODY, now=T + 10)
    assert not receiver_verify("whsec_other_secret_0000000000", header, BODY, now=T)
    assert not receiver_verify(SECRET, header, BODY + b" ", now=T)
    assert verify(SECRET, header, BODY, now=T + 299) == T


@given(secret=st.text(min_size=16, max_size=64), body=st.binary(max_size=256),
       t=st.integers(min_value=0, max_value=4_000_000_000))
def test_any_signature_verifies_independently(secret, body, t):
    header = sign(secret, t, body)
    assert receiver_verify(secret, header, body, now=t)
    assert verify(secret, header, body, now=t) == t


def test_replays_and_tampering_are_refused():
    header = sign(SECRET, T, BODY)
    with pytest.raises(InvalidSignature, match="replay"):
        verify(SECRET, header, BODY, now=T + 301)  # an old request, sent again
    with pytest.raises(InvalidSignature, match="replay"):
        verify(SECRET, header, BODY, now=T - 301)  # from the future
    assert verify(SECRET, header, BODY, now=T + 3600, tolerance=3600) == T
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify(SECRET, header, BODY.replace(b"7", b"8"), now=T)
    # A new timestamp on an old body: the MAC no longer matches.
    forged = header.replace(f"t={T}", f"t={T + 1000}")
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify(SECRET, forged, BODY, now=T + 1000)


def test_rotation_and_malformed_headers():
    good = sign(SECRET, T, BODY).split(",")[1]
    assert verify(SECRET, f"t={T},v1={'0' * 64},{good}", BODY, now=T) == T
    for header in ("", "v1=abc", f"t={T}", f"t=abc,{good}", f"t={T},t={T},{good}",
                   f"t=-{T},{good}", f"t={T},v1=é", f"t=²,{good}"):
        with pytest.raises(InvalidSignature):
            verify(SECRET, header, BODY, now=T)
