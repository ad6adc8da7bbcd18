"""The backup file: a plain tar archive of two members, a small JSON manifest first and the
database dump second.

``manifest.json`` says what the dump is — the satvault version and the Alembic revision of
the database it came from, when it was taken, the kind of database, the dump's name, size
and SHA-256 — so a restore can refuse before touching anything: a file that is not a
satvault backup, a dump whose bytes are not the ones the manifest vouches for, a revision
this code does not know (made by a newer satvault). ``tar tf`` and ``tar xOf FILE
manifest.json`` read it without satvault.

The dump is PostgreSQL's custom format (``pg_dump -Fc``, itself compressed) or a SQLite
database file made by SQLite's online backup. The archive is written beside its final name
and renamed into place once complete, mode 0600: it holds every balance, the password and
API-key hashes and the webhook secrets.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from satvault.backup.errors import BadArchive, ChecksumMismatch
from satvault.kernel import strictjson

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST_NAME", "NEWEST_TRANSFER", "DumpInfo", "Kind",
           "Manifest", "extract_dump", "file_sha256", "read_manifest", "write_archive"]

FORMAT = "satvault-backup"
# When a database's ledger last moved: the manifest's ``ledger_newest_at``, and a restore's
# target (refused when newer without ``--discard-newer``).
NEWEST_TRANSFER = "SELECT max(created_at) FROM ledger_transfers"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_MANIFEST_MAX = 64 * 1024
_CHUNK = 1024 * 1024
_DUMP_MAX = 2**63 - 1  # bytes: what a file size can be
_TEXT_MAX = 200
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
Kind = Literal["postgresql", "sqlite"]
DUMP_NAMES: dict[str, str] = {"postgresql": "database.pgdump", "sqlite": "database.sqlite3"}

Progress = Callable[[int], None]  # bytes done so far


@dataclass(frozen=True)
class DumpInfo:
    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    satvault_version: str
    revision: str | None
    created_at: str
    kind: Kind
    dump: DumpInfo
    server_version: str = ""
    # The newest ledger transfer in the dump (ISO 8601; "" for none, or a backup made before
    # this field; read by NEWEST_TRANSFER): a restore over a database whose ledger moved past
    # it is asked about.
    ledger_newest_at: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> Manifest:
        """The manifest, every field checked for its type and range: :class:`BadArchive`
        naming the first that is wrong (found from outside: ``"bytes": Infinity`` crashed
        verify and restore with OverflowError)."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BadArchive("not a satvault backup: its manifest does not say "
                             f"\"format\": \"{FORMAT}\"")
        version = raw.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise BadArchive(f"backup format version {version!r} is not "
                             f"{FORMAT_VERSION}, the one this satvault reads: restore it with "
                             "the satvault that made it")
        try:
            kind = raw["kind"]
            if not isinstance(kind, str) or kind not in DUMP_NAMES:
                raise ValueError(f"unknown database kind {kind!r}")
            dump = raw["dump"]
            if not isinstance(dump, dict):
                raise ValueError("\"dump\" is not an object")
            name, size, sha256 = dump["name"], dump["bytes"], dump["sha256"]
            if name != DUMP_NAMES[kind]:
                raise ValueError(f"a {kind} dump is named {DUMP_NAMES[kind]!r}, not {name!r}")
            if type(size) is not int or not 0 <= size <= _DUMP_MAX:
                raise ValueError(f"the dump's size {size!r} is not a whole number of bytes "
                                 f"from 0 to {_DUMP_MAX}")
            if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
                raise ValueError(f"the dump's sha256 {sha256!r} is not 64 hex digits")
            revision = raw["revision"]
            if revision is not None:
                _text("revision", revision)
            created_at = _text("created_at", raw["created_at"])
            newest = _text("ledger_newest_at", raw.get("ledger_newest_at", ""), empty=True)
            for field, moment in (("created_at", created_at), ("ledger_newest_at", newest)):
                try:
                    if moment:
                        datetime.fromisoformat(moment)
                except ValueError:
                    raise ValueError(f"{field} {moment!r} is not an ISO 8601 time") from None
            return cls(satvault_version=_text("satvault_version", raw["satvault_version"]),
                       revision=revision, created_at=created_at, kind=cast(Kind, kind),
                       dump=DumpInfo(name=name, bytes=size, sha256=sha256.lower()),
                       server_version=_text("server_version", raw.get("server_version", ""),
                                            empty=True), ledger_newest_at=newest)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadArchive(f"the backup's manifest is incomplete or malformed: {exc}") from exc


def _text(field: str, value: Any, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > _TEXT_MAX or not (value or empty):
        raise ValueError(f"{field} {value!r} is not a text of 1 to {_TEXT_MAX} characters")
    return value


def file_sha256(path: Path, progress: Progress | None = None) -> tuple[str, int]:
    """The file's SHA-256 (hex) and size, read in 1 MiB chunks."""
    digest, done = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done)
    return digest.hexdigest(), done


def write_archive(dest: Path, manifest: Manifest, dump: Path) -> int:
    """Write the archive to ``dest`` (atomically, mode 0600); returns its size in bytes."""
    dest = dest.resolve()
    partial = dest.with_name(f".{dest.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w",
                                                      format=tarfile.PAX_FORMAT) as tar:
            body = json.dumps(manifest.as_dict(), indent=2, sort_keys=True).encode() + b"\n"
            member = tarfile.TarInfo(MANIFEST_NAME)
            member.size, member.mode, member.mtime = len(body), 0o600, time.time()
            tar.addfile(member, io.BytesIO(body))
            member = tarfile.TarInfo(manifest.dump.name)
            member.size, member.mode, member.mtime = dump.stat().st_size, 0o600, time.time()
            with dump.open("rb") as fh:
                tar.addfile(member, fh)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return dest.stat().st_size


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")
    except FileNotFoundError as exc:
        raise BadArchive(f"no backup file at {path}") from exc
    except (tarfile.TarError, OSError) as exc:
        raise BadArchive(f"{path} is not a satvault backup (not a tar archive): {exc}") from exc


def read_manifest(path: Path) -> Manifest:
    """The archive's manifest, checked for shape (not yet against the dump)."""
    with _open(path) as tar:
        first = tar.next()
        if first is None or first.name != MANIFEST_NAME or not first.isfile():
            raise BadArchive(f"{path} is not a satvault backup: it does not start with "
                             f"{MANIFEST_NAME}")
        if first.size > _MANIFEST_MAX:
            raise BadArchive(f"the manifest in {path} is implausibly large")
        fh = tar.extractfile(first)
        assert fh is not None
        try:
            raw = strictjson.loads(fh.read())
        except ValueError as exc:
            raise BadArchive(f"the manifest in {path} is not JSON: {exc}") from exc
    return Manifest.from_dict(raw)


def extract_dump(path: Path, manifest: Manifest, into: Path,
                 progress: Progress | None = None) -> Path:
    """Copy the dump out of the archive into the directory ``into``, hashing it on the way;
    :class:`ChecksumMismatch` (and the copy removed) unless size and SHA-256 match the
    manifest."""
    target = into / DUMP_NAMES[manifest.kind]
    digest, done = hashlib.sha256(), 0
    try:
        with _open(path) as tar:
            member = next((m for m in tar if m.name == manifest.dump.name), None)
            if member is None or not member.isfile():
                raise BadArchive(f"{path} has no {manifest.dump.name}, the dump its manifest "
                                 "names")
            source = tar.extractfile(member)
            assert source is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done)
    except (tarfile.TarError, EOFError) as exc:
        # Found from outside: a file cut short (a copy that stopped) raised a traceback.
        target.unlink(missing_ok=True)
        raise ChecksumMismatch(f"{path} is damaged (it ends before its dump does: {exc}); "
                               "nothing was restored") from exc
    if done != manifest.dump.bytes or digest.hexdigest() != manifest.dump.sha256:
        target.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"the dump in {path} does not match its manifest (expected {manifest.dump.bytes} "
            f"bytes with SHA-256 {manifest.dump.sha256}, found {done} bytes with "
            f"{digest.hexdigest()}): the file is damaged or was altered; nothing was restored")
    return target
