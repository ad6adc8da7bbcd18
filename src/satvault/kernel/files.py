"""Files only their owner may read: the SQLite database (found from outside: created ``0644``,
so any local account could read the TOTP secrets, token signing keys and webhook secrets in
it, where the seed, its passphrase and backup archives are ``0600``), and whatever else holds
secrets."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["create_private", "flock_or_none"]


def create_private(path: Path) -> None:
    """Create ``path`` empty, readable and writable by its owner only (``0600``), unless it
    exists already (then it is left as it is: an operator's choice). SQLite gives its ``-wal``
    and ``-shm`` files the database file's mode, so the database is private as a whole."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def flock_or_none(path: str | os.PathLike[str], *, exclusive: bool) -> int | None:
    """A descriptor of ``path`` holding a ``flock`` (exclusive, or shared), taken without
    waiting: None when another open file holds one that conflicts. The lock lasts until the
    descriptor is closed (or the process ends). Opening the file may raise :class:`OSError`.
    ``flock`` locks are apart from the ``fcntl`` locks SQLite takes: neither waits for the
    other."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
