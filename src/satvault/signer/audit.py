"""The signer's audit log: one JSON line per signature it hands out, and per refusal.

A ``"sign_payout"`` line records what was signed — txid, the inputs spent (outpoint, amount,
wallet, path), the outputs (address, amount, kind, payment ref or own-wallet path), the fee,
the value leaving the platform, size and the limits it was checked against. It is written
(and fsynced) before the signed transaction leaves the signer; if it cannot be written, the
signature is withheld (:class:`AuditLogError`). These lines are also the signer's memory:
at start-up the rolling 24-hour window of value leaving is rebuilt from them
(:mod:`satvault.signer._limits`).

A ``"refused"`` line records each refusal: the reason, the error type, the txid when the
PSBT could be read, and what the PSBT claimed to spend and pay.

No line holds key material: no private or extended private keys, no seed, no mnemonic. The
file is created 0600 and only ever appended to.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from satvault.kernel import strictjson
from satvault.kernel.files import flock_or_none
from satvault.signing.errors import AuditLogError

__all__ = ["AuditLog", "hold_file_lock", "read_records"]


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every line of the audit log at ``path``, in order (none if it does not exist). A line
    that is not a JSON object raises :class:`AuditLogError` naming it: the log is the
    signer's memory of what left, so it is not guessed around."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditLogError(f"cannot read the audit log {path}: {exc.strerror}") from exc
    with fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = strictjson.loads(raw)
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ones
                raise AuditLogError(f"line {number} of the audit log {path} is not JSON; "
                                    "repair or move the file") from exc
            if not isinstance(record, dict):
                raise AuditLogError(f"line {number} of the audit log {path} is not an "
                                    "object; repair or move the file")
            yield record


def hold_file_lock(path: str | os.PathLike[str], what: str, *,
                   shared: bool = False) -> int:
    """A lock (``flock``, exclusive unless ``shared``) on the file at ``path``, kept by the
    returned descriptor until the process ends: a second signer on the same seed file or
    audit log is refused instead of keeping a 24-hour window of its own (found from outside:
    two signers on one seed each let their whole daily cap leave). ``shared``: the lock
    ``satvault serve`` takes for its in-process signer, which instances of one platform
    share (on PostgreSQL only the leader signs) and a ``signer serve``'s exclusive one
    excludes."""
    try:
        fd = flock_or_none(path, exclusive=not shared)
    except OSError as exc:
        raise AuditLogError(f"cannot open the {what} {path}: {exc.strerror}") from exc
    if fd is None:
        raise AuditLogError(f"another signer is running with the {what} {path}; one signer "
                            "per seed and audit log (their daily caps would add up)")
    return fd


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
