"""Secrets: ids, API keys and passwords.

API keys are 256-bit random secrets, so a single SHA-256 is the right hash for them (a slow
hash buys nothing against brute force of 2^256 and would cost a KDF per request); lookup is by
the key id embedded in the token, comparison in constant time. Passwords are low-entropy and
get argon2id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["hash_password", "hash_secret", "new_token", "parse_token",
           "secrets_match", "verify_password"]

_hasher = PasswordHasher()
TOKEN_PREFIX = "sv"


def new_token(key_id: str) -> tuple[str, str]:
    """Return (token shown once to the user, hash stored)."""
    secret = secrets.token_urlsafe(32)
    return f"{TOKEN_PREFIX}.{key_id}.{secret}", hash_secret(secret)


def parse_token(token: str) -> tuple[str, str] | None:
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_match(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, stored: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
