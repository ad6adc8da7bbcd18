"""Object ids: a short type prefix and 20 random characters of a Crockford-like base32
alphabet (no i, l, o, u), about 100 bits, e.g. ``wd_7k2m…``. Random, not sequential: an id
says nothing about how many objects exist, and a guessed one is as good as none.

:func:`is_id` tells whether text has that shape: an id a client decoded out of something it
sent (a token's header, a refresh token) is checked with it before it is used as a key, so a
NUL or a lone surrogate hidden under base64 or a JSON escape never reaches the database."""

from __future__ import annotations

import base64
import secrets

__all__ = ["is_id", "new_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# RFC 4648 base32 to ours, letter for letter: 5 random bits per character either way.
_OURS = frozenset(_ALPHABET)
_TO_OURS = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def new_id(prefix: str, length: int = 20) -> str:
    # One read of the system's random source for the whole id (5 bits a character), not one
    # per character: a secrets.choice per character cost ~40 µs an id, and every payment
    # makes several.
    raw = base64.b32encode(secrets.token_bytes((5 * length + 7) // 8 + 1))
    return f"{prefix}_" + raw.translate(_TO_OURS)[:length].decode()


def is_id(text: object, prefix: str, length: int = 20) -> bool:
    """Whether ``text`` is shaped like ``new_id(prefix, length)``."""
    return (isinstance(text, str) and len(text) == len(prefix) + 1 + length
            and text.startswith(f"{prefix}_") and _OURS.issuperset(text[len(prefix) + 1:]))
