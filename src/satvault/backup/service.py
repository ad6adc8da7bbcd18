"""``backup`` and ``restore``: a database to a backup file and back, either kind.

A backup reads the database while satvault keeps serving: PostgreSQL from one exported
snapshot, SQLite in one read transaction (see ``_postgres`` and ``_sqlite``). Either way the
copy holds every transaction committed before the backup began, and the manifest records
the Alembic revision of exactly that copy.

A restore checks everything it can before it writes: the manifest's shape and format, the
dump's size and SHA-256, that its schema revision is one this satvault knows (a newer one
means a newer satvault made it), that the target is the same kind of database and holds no
tables (unless ``force``). A backup of an older revision is restored as it is; ``satvault db
upgrade`` then brings it to this code's head.

``progress(phase, done, total)`` is told how far each phase is (bytes, or pg_restore's items;
``total`` None when unknown); the CLI draws it, the tests ignore it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from satvault import __version__
from satvault.backup import _postgres, _sqlite
from satvault.backup.archive import (
    DUMP_NAMES,
    DumpInfo,
    Kind,
    Manifest,
    extract_dump,
    file_sha256,
    read_manifest,
    write_archive,
)
from satvault.backup.errors import (
    BackupError,
    NotABackupFile,
    RevisionTooNew,
    TargetInUse,
    TargetNewer,
    TargetNotEmpty,
    WrongKind,
)
from satvault.config import redact_url
from satvault.db import async_database_url, create_engine, sqlite_in_use
from satvault.events.ids import IdsNotMovable, Rebased, rebase_event_ids
from satvault.logs import get_logger
from satvault.migrate import alembic_config, head_revision

__all__ = ["BackupResult", "Progress", "RestoreResult", "backup", "database_kind",
           "known_revision", "restore", "verify"]

log = get_logger(__name__)
Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest
    archive_bytes: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"ok": True, "file": str(self.path), "bytes": self.archive_bytes,
                "seconds": round(self.seconds, 3), "manifest": self.manifest.as_dict()}


@dataclass(frozen=True)
class RestoreResult:
    into: str  # redacted
    manifest: Manifest
    revision: str | None
    seconds: float
    event_ids: Rebased | None = None  # None: not movable before `db upgrade` (old SQLite)

    def as_dict(self) -> dict[str, Any]:
        head = head_revision()
        out: dict[str, Any] = {
            "ok": True, "into": self.into, "revision": self.revision, "head": head,
            "up_to_date": self.revision == head, "seconds": round(self.seconds, 3),
            "manifest": self.manifest.as_dict(),
            "event_ids": self.event_ids.as_dict() if self.event_ids else None}
        if self.revision != head:
            out["next"] = "run `satvault db upgrade` to migrate the restored database" + (
                "" if self.event_ids else ", then `satvault events rebase-ids`")
        return out


async def _rebase_event_ids(url: str) -> Rebased | None:
    """The restored database hands out event ids it never handed out before the restore
    (:mod:`satvault.events.ids`), unless its schema cannot (an old SQLite outbox)."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            session = AsyncSession(bind=conn)
            try:
                moved = await rebase_event_ids(session, now=datetime.now(UTC))
            except IdsNotMovable as exc:
                log.warning("restore_event_ids_not_moved", reason=str(exc))
                return None
            finally:
                await session.close()
    finally:
        await engine.dispose()
    log.info("restore_event_ids_moved", **moved.as_dict())
    return moved


def database_kind(url: str) -> Kind:
    return "sqlite" if async_database_url(url).startswith("sqlite") else "postgresql"


# The files SQLite keeps beside a database while it is open.
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _sqlite_path(url: str) -> Path:
    database = make_url(async_database_url(url)).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored into")
    return Path(database)


def known_revision(revision: str) -> bool:
    """Whether this code's migrations contain ``revision`` (a newer satvault's do not)."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _noop(_phase: str, _done: int, _total: int | None) -> None:
    return None


async def backup(url: str, dest: Path, *, progress: Progress | None = None) -> BackupResult:
    """Back the database at ``url`` up into the archive ``dest`` (replaced if it exists)."""
    report = progress or _noop
    kind, started = database_kind(url), time.monotonic()
    if kind == "sqlite":
        live = _sqlite_path(url).resolve()
        # Found from outside: ``--to`` the live database file replaced it with the archive
        # (and a running server went on writing to the deleted file) and said ok.
        if dest.resolve() in {live, *(Path(f"{live}{end}") for end in _SQLITE_SIDE_FILES)}:
            raise BackupError(f"{dest} is the database (or its journal) being backed up: "
                              "choose another file")
    # An existing file is replaced only if it is a backup already (found from outside:
    # ``--to`` the signer's seed file replaced the encrypted seed with an archive and said
    # ok; its audit log or passphrase would have gone the same way).
    if dest.is_dir():  # found from outside: refused only at the rename, by the OS
        raise NotABackupFile(f"{dest} is a directory: name the backup file to write "
                             "(nothing was changed)")
    if dest.exists():
        try:
            await asyncio.to_thread(read_manifest, dest)
        except BackupError:
            raise NotABackupFile(f"{dest} exists and is not a satvault backup: choose another "
                                 "file (nothing was changed)") from None
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    log.info("backup_started", kind=kind, database=redact_url(url), file=str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".satvault-backup-", dir=dest.parent) as tmp:
        dump_file = Path(tmp) / DUMP_NAMES[kind]
        report("dump", 0, None)
        server_version = ""
        if kind == "sqlite":
            revision = await asyncio.to_thread(_sqlite.dump, _sqlite_path(url), dump_file)
            newest = (await asyncio.to_thread(_sqlite.newest_transfer, dump_file)
                      if revision is not None else None)
        else:
            revision, server_version, newest = await _postgres.dump(
                url, dump_file, step=lambda done, total: report("dump", done, total))
        if revision is None:
            raise BackupError("the database has no satvault schema (no Alembic revision): "
                              "there is nothing to back up")
        size = dump_file.stat().st_size
        report("dump", size, size)
        log.info("backup_dumped", kind=kind, bytes=size, revision=revision,
                 seconds=round(time.monotonic() - started, 3))
        digest, _ = await asyncio.to_thread(
            file_sha256, dump_file, lambda done: report("checksum", done, size))
        manifest = Manifest(satvault_version=__version__, revision=revision,
                            created_at=created_at, kind=kind,
                            dump=DumpInfo(name=DUMP_NAMES[kind], bytes=size, sha256=digest),
                            server_version=server_version,
                            ledger_newest_at=newest.isoformat() if newest else "")
        report("archive", 0, size)
        archive_bytes = await asyncio.to_thread(write_archive, dest, manifest, dump_file)
        report("archive", size, size)
    result = BackupResult(dest.resolve(), manifest, archive_bytes, time.monotonic() - started)
    log.info("backup_finished", file=str(result.path), bytes=archive_bytes, sha256=digest,
             revision=revision, seconds=round(result.seconds, 3))
    return result


def _check_revision(source: Path, manifest: Manifest) -> None:
    if manifest.revision is None or not known_revision(manifest.revision):
        raise RevisionTooNew(
            f"{source} is at schema revision {manifest.revision!r}, which this satvault "
            f"({__version__}, head {head_revision()}) does not know: it was made by a newer "
            f"satvault ({manifest.satvault_version}); restore it with that version or newer")


async def verify(source: Path, *, progress: Progress | None = None) -> Manifest:
    """Every check a restore makes before it writes, without a target: the manifest, the
    revision, the dump's size and SHA-256."""
    report = progress or _noop
    manifest = await asyncio.to_thread(read_manifest, source)
    _check_revision(source, manifest)
    with tempfile.TemporaryDirectory(prefix=".satvault-verify-") as tmp:
        await asyncio.to_thread(extract_dump, source, manifest, Path(tmp),
                                lambda done: report("verify", done, manifest.dump.bytes))
    log.info("backup_verified", file=str(source), sha256=manifest.dump.sha256,
             revision=manifest.revision)
    return manifest


async def _refuse_if_newer(into: str, kind: str, manifest: Manifest) -> None:
    """:class:`TargetNewer` when the database ``--force`` would replace holds ledger
    transfers made after the backup began (found from outside: an older backup restored
    over a newer database said ok; the withdrawals paid since were spendable again, and the
    customer was paid twice). The backup's manifest names its newest transfer; one made
    before that field read from the backup's start on."""
    newest = (await asyncio.to_thread(_sqlite.newest_transfer, _sqlite_path(into))
              if kind == "sqlite" else await _postgres.newest_transfer(into))
    if newest is None:
        return
    if manifest.ledger_newest_at:  # the backup's own newest transfer: exact
        moved = newest > datetime.fromisoformat(manifest.ledger_newest_at)
    else:  # a backup without it: anything from its start on may be missing from it
        moved = newest >= datetime.fromisoformat(manifest.created_at)
    if moved:
        raise TargetNewer(
            f"the target database {redact_url(into)} holds ledger transfers up to "
            f"{newest.isoformat(timespec='seconds')}, after this backup was made "
            f"({manifest.created_at}): restoring it forgets them, and every withdrawal paid "
            "since would be spendable again. Restore into a new database and compare, or pass "
            "--discard-newer, then settle with the nodes before serving (docs/operations.md, "
            "after a restore); nothing was changed")


async def _refuse_if_in_use(into: str, kind: str) -> None:
    """:class:`TargetInUse` when something uses the database ``--force`` would replace: a
    ``satvault serve`` on the SQLite file (its lock), or any other session on PostgreSQL.
    A serve left running over a restored database went on from the restored balances (found
    from outside: its payout job paid a withdrawal from money already paid out)."""
    if kind == "sqlite":
        if await asyncio.to_thread(sqlite_in_use, into):
            raise TargetInUse(f"{redact_url(into)} is being served by a satvault process: stop "
                              "it (and every satvault command using it) first; nothing was "
                              "changed")
        return
    others = await _postgres.other_sessions(into)
    if others:
        names = ", ".join(sorted(set(others))[:5])
        raise TargetInUse(f"{len(others)} other sessions are connected to "
                          f"{redact_url(into)} ({names}): stop every satvault process and "
                          "anything else using it first; nothing was changed")


async def restore(source: Path, into: str, *, force: bool = False,
                  discard_newer: bool = False, progress: Progress | None = None
                  ) -> RestoreResult:
    """Restore the archive ``source`` into the database at ``into``. ``discard_newer``: with
    ``force``, replace a database whose ledger moved after the backup was made too."""
    report = progress or _noop
    started = time.monotonic()
    manifest = await asyncio.to_thread(read_manifest, source)
    kind = database_kind(into)
    log.info("restore_started", file=str(source), kind=manifest.kind,
             revision=manifest.revision, created_at=manifest.created_at,
             into=redact_url(into), force=force)
    if manifest.kind != kind:
        raise WrongKind(f"{source} is a {manifest.kind} backup and cannot be restored into a "
                        f"{kind} database")
    _check_revision(source, manifest)
    if force:  # found from outside: a restore under a running serve, which paid on
        await _refuse_if_in_use(into, kind)
        if not discard_newer:
            await _refuse_if_newer(into, kind, manifest)
    if not force:  # before the long part; the engines check again as they write
        tables = (await asyncio.to_thread(_sqlite.table_count, _sqlite_path(into))
                  if kind == "sqlite" else await _postgres.target_tables(into))
        if tables:
            raise TargetNotEmpty(
                f"the target database {redact_url(into)} already holds {tables} tables: "
                "restore into a new database, or pass --force to replace them (stop "
                "satvault first)")
    tmp_parent = _sqlite_path(into).parent if kind == "sqlite" else None
    if tmp_parent is not None:
        tmp_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".satvault-restore-", dir=tmp_parent) as tmp:
        report("verify", 0, manifest.dump.bytes)
        dump_file = await asyncio.to_thread(
            extract_dump, source, manifest, Path(tmp),
            lambda done: report("verify", done, manifest.dump.bytes))
        log.info("restore_verified", sha256=manifest.dump.sha256, bytes=manifest.dump.bytes)
        report("restore", 0, None)
        if kind == "sqlite":
            revision = await asyncio.to_thread(_sqlite.restore, dump_file, _sqlite_path(into),
                                               force=force)
        else:
            revision = await _postgres.restore(
                dump_file, into, force=force,
                step=lambda done, total: report("restore", done, total))
    if revision != manifest.revision:
        raise BackupError(f"the restored database is at revision {revision!r}, not "
                          f"{manifest.revision!r} as the manifest says")
    rebased = await _rebase_event_ids(into)
    result = RestoreResult(redact_url(into), manifest, revision, time.monotonic() - started,
                           rebased)
    log.info("restore_finished", into=result.into, revision=revision,
             seconds=round(result.seconds, 3))
    return result
