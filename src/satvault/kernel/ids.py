"""Object ids: a short type prefix and 20 random characters of a Crockford-like base32
alphabet (no i, l, o, u), about 100 bits, e.g. ``wd_7k2m…``. Random, not sequential: an id
says nothing about how many objects exist, and a guessed one is as good as none."""

from __future__ import annotations

import secrets

__all__ = ["new_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str, length: int = 20) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))
