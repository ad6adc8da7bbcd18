"""The signer's audit log: one JSON line per signature it hands out.

A line records what was signed — txid, the inputs spent (outpoint, amount, wallet, path),
the outputs (address, amount, payment ref or change path), the fee, size and the limits it
was checked against — and never key material: no private or extended private keys, no
seed, no mnemonic. The line is written (and fsynced) before the signed transaction leaves
the signer; if it cannot be written, the signature is withheld (:class:`AuditLogError`).
The file is created 0600 and only ever appended to.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from satvault.signing.errors import AuditLogError

__all__ = ["AuditLog"]


class AuditLog:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def touch(self) -> None:
        """Create the file (0600) if needed and prove it is writable, at startup rather than
        at the first signature."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditLogError(f"cannot open the audit log {self.path}: "
                                f"{exc.strerror}") from exc
        os.close(fd)

    def append(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                raise AuditLogError(f"cannot open the audit log {self.path}: "
                                    f"{exc.strerror}") from exc
            try:
                os.write(fd, line)
                os.fsync(fd)
            except OSError as exc:
                raise AuditLogError(f"cannot write the audit log {self.path}: "
                                    f"{exc.strerror}") from exc
            finally:
                os.close(fd)
