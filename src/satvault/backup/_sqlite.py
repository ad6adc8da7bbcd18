"""SQLite through its online backup API (``sqlite3.Connection.backup``).

The copy is made in one step, inside one read transaction on the source: with the database
in WAL mode the writers of a running ``satvault serve`` carry on meanwhile, and the copy is
the database exactly as of the moment that transaction began, committed rows in the ``-wal``
file included (which a plain file copy of ``satvault.db`` would miss). These functions block:
the service runs them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from satvault.backup.archive import NEWEST_TRANSFER
from satvault.backup.errors import (
    BackupError,
    BadArchive,
    TargetInUse,
    TargetNotEmpty,
    ToolFailed,
)
from satvault.kernel.files import create_private, flock_or_none

__all__ = ["dump", "newest_transfer", "restore", "table_count"]


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _one(path: Path, sql: str) -> Any:
    """The first column of ``sql``'s one row on the target at ``path`` (None: no file, or no
    such table). A file that is not a SQLite database is refused as one (found from outside:
    a traceback, not the refusal)."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        with _connect(path) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise BackupError(f"{path} is not a SQLite database ({exc}): nothing was "
                          "changed") from exc
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a SQLite database ({exc}): nothing was "
                          "changed") from exc


def table_count(path: Path) -> int:
    return int(_one(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                          "AND name NOT LIKE 'sqlite_%'") or 0)


def newest_transfer(path: Path) -> datetime | None:
    """When the newest ledger transfer of the SQLite database at ``path`` was made (None: no
    file, no schema, no transfer)."""
    at = _one(path, NEWEST_TRANSFER)
    return None if at is None else datetime.fromisoformat(str(at)).replace(tzinfo=UTC)


def _revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else str(row[0])


def dump(source: Path, out: Path) -> str | None:
    """Copy the live database ``source`` to the new file ``out``; returns the copy's Alembic
    revision (read from the copy, so it is the revision of exactly what was copied)."""
    if not source.exists():
        raise ToolFailed(f"there is no SQLite database at {source}")
    try:
        with _connect(source) as src, _connect(out) as dst:
            src.backup(dst)  # pages=-1: every page in one step, one consistent read
            # A file of its own: no -wal beside it; checked page by page before it is sealed.
            dst.execute("PRAGMA journal_mode=DELETE")
            problems = dst.execute("PRAGMA quick_check").fetchall()
            if problems != [("ok",)]:
                raise ToolFailed(f"the copy of {source} fails SQLite's quick_check: "
                                 f"{problems[:5]}")
            return _revision(dst)
    except sqlite3.Error as exc:
        raise ToolFailed(f"SQLite could not back up {source}: {exc}") from exc


def restore(dump_file: Path, target: Path, *, force: bool) -> str | None:
    """Write the copy ``dump_file`` over ``target`` (a new file, or one without tables unless
    ``force``) through the backup API, so an old ``-wal`` beside the target cannot survive
    into the result. Returns the restored revision."""
    tables = table_count(target)
    if tables and not force:
        raise TargetNotEmpty(f"{target} already holds {tables} tables: restore into a new "
                             "file, or pass --force to replace it (stop satvault first)")
    target.parent.mkdir(parents=True, exist_ok=True)
    create_private(target)  # as private as the archive it comes from
    # Held while the copy is written: a serve cannot start on the file meanwhile, and one
    # that started since the caller's check is found here (satvault.db.hold_sqlite_in_use).
    held = flock_or_none(target, exclusive=True)
    if held is None:
        raise TargetInUse(f"{target} is being served by a satvault process: stop it first; "
                          "nothing was changed")
    try:
        return _copy_into(dump_file, target)
    finally:
        os.close(held)


def _copy_into(dump_file: Path, target: Path) -> str | None:
    try:
        with _connect(dump_file) as src:
            if src.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                raise BadArchive("the SQLite database in the backup fails quick_check")
            with _connect(target) as dst:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=WAL")
                return _revision(dst)
    except sqlite3.DatabaseError as exc:
        raise ToolFailed(f"SQLite could not restore into {target}: {exc}") from exc
