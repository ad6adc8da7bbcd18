"""Secrets satvault must read back (TOTP secrets, JWT signing keys, webhook signing secrets),
sealed at rest.

With ``SATVAULT_SECRET_KEY`` set, each is stored as ``v1:`` + base64(nonce ‖ AES-256-GCM
ciphertext), under a key derived from it with HKDF-SHA256, and bound to its row by the
associated data (``purpose:row id``): a database dump, a replica or a backup yields neither
codes nor token-signing keys, and a sealed value copied into another row does not open.
Without the setting (development) values are stored as they are; a plain value still opens
once a key is set (and is sealed when next written), a sealed one without the key does not
(:class:`SealedSecretUnavailable`).
"""

from __future__ import annotations

import base64
import os
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from satvault.kernel.errors import SatvaultError

__all__ = ["SealedSecretUnavailable", "Sealer"]

_PREFIX = "v1:"


class SealedSecretUnavailable(SatvaultError):
    """A sealed secret and no key (or the wrong one) to open it."""


@cache
def _derive(secret: bytes) -> bytes:
    # The label predates the webhooks' use of this key; changing it would leave every sealed
    # value unreadable, and the purpose in the associated data already keeps uses apart.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"satvault",
                info=b"satvault auth secrets v1").derive(secret)


class Sealer:
    def __init__(self, secret: bytes | None = None) -> None:
        self._aead = AESGCM(_derive(secret)) if secret else None

    @property
    def sealing(self) -> bool:
        return self._aead is not None

    @staticmethod
    def is_sealed(stored: str) -> bool:
        """Whether ``stored`` is a sealed value (a plain one is stored as it is)."""
        return stored.startswith(_PREFIX)

    def seal(self, value: str, *, purpose: str, row: str) -> str:
        if self._aead is None:
            return value
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value.encode(), f"{purpose}:{row}".encode())
        return _PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str, *, purpose: str, row: str) -> str:
        if not stored.startswith(_PREFIX):
            return stored
        if self._aead is None:
            raise SealedSecretUnavailable(f"a {purpose} is sealed, and SATVAULT_SECRET_KEY "
                                          "is not set")
        raw = base64.b64decode(stored[len(_PREFIX):])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], f"{purpose}:{row}".encode()).decode()
        except InvalidTag as exc:
            raise SealedSecretUnavailable(f"a {purpose} does not open with this "
                                          "SATVAULT_SECRET_KEY") from exc
