"""Secrets: ids, API keys and passwords.

API keys are 256-bit random secrets, so a single SHA-256 is the right hash for them (a slow
hash buys nothing against brute force of 2^256 and would cost a KDF per request); lookup is by
the key id embedded in the token, comparison in constant time. Passwords are low-entropy and
get argon2id.

argon2id costs tens of milliseconds of CPU (more on a busy machine), so an async caller uses
:func:`hash_password_async` / :func:`verify_password_async`, which run it on a small pool of
its own (argon2-cffi releases the GIL): found from outside, eight concurrent wrong sign-ins
run on the event loop stalled every other request, ``/healthz`` included, for seconds. The
pool has :data:`ARGON2_THREADS` threads, so a flood of password checks queues for them
instead of taking every thread of the process; the sync functions are for sync callers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["ARGON2_THREADS", "hash_password", "hash_password_async", "hash_secret",
           "new_token", "parse_token", "secrets_match", "verify_password",
           "verify_password_async"]

_hasher = PasswordHasher()
# At most this many argon2 computations at once per process; more wait their turn (each
# takes its memory cost, 64 MiB by default, while it runs).
ARGON2_THREADS = 2
_pool = ThreadPoolExecutor(max_workers=ARGON2_THREADS, thread_name_prefix="argon2")
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


async def hash_password_async(password: str) -> str:
    """:func:`hash_password` off the event loop, on the argon2 pool."""
    return await asyncio.get_running_loop().run_in_executor(_pool, hash_password, password)


async def verify_password_async(password: str, stored: str) -> bool:
    """:func:`verify_password` off the event loop, on the argon2 pool."""
    return await asyncio.get_running_loop().run_in_executor(
        _pool, verify_password, password, stored)
