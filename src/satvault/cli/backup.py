"""``satvault backup`` and ``satvault restore``: the database to a file and back.

Both print one JSON object on stdout (the manifest included). On stderr: a progress bar when
stderr is a terminal, and structured log lines (``backup_started``, ``backup_dumped``,
``backup_finished``, ``restore_verified``, ``restore_finished``…) at the configured level,
``info`` by default. Exit 1 with ``{"ok": false, "error": …}`` when anything is refused: a
missing tool, a damaged file, a backup from a newer satvault, a non-empty target.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from satvault.cli._common import emit, fail
from satvault.config import get_settings
from satvault.kernel.errors import SatvaultError
from satvault.logs import configure_logging

__all__ = ["backup_cmd", "restore_cmd"]

T = TypeVar("T")
_PHASES = {"dump": "dumping the database", "checksum": "hashing the dump",
           "archive": "writing the backup file", "verify": "checking the backup's checksum",
           "restore": "restoring"}
Progress = Callable[[str, int, "int | None"], None]


def _detail(phase: str, done: int, total: int | None) -> str:
    if phase == "restore":  # pg_restore's items, not bytes
        return f"{done}/{total} items" if total else ""
    mib = 1024 * 1024
    return f"{done / mib:.1f}/{total / mib:.1f} MiB" if total else f"{done / mib:.1f} MiB"


@contextmanager
def _progress() -> Iterator[Progress]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console,
                  transient=True, disable=not console.is_terminal) as bar:
        tasks: dict[str, Any] = {}

        def step(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(_PHASES.get(phase, phase), total=total, detail="")
            bar.update(tasks[phase], completed=done, total=total,
                       detail=_detail(phase, done, total))

        yield step


def _run(work: Callable[[Progress], Coroutine[Any, Any, T]]) -> T:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        with _progress() as step:
            return asyncio.run(work(step))
    except SatvaultError as exc:
        fail(str(exc))
    except OSError as exc:  # the file: missing directory, no permission, disk full
        fail(f"{type(exc).__name__}: {exc}")


def backup_cmd(
    to: Annotated[Path, typer.Option("--to", help="The backup file to write (an earlier "
                                                  "backup there is replaced, any other file "
                                                  "refused; written beside it, then "
                                                  "renamed).")],
) -> None:
    """Back the database up into one file, while satvault keeps running.

    PostgreSQL with pg_dump from one snapshot, SQLite with its online backup API; a manifest
    (version, schema revision, time, SHA-256 of the dump) travels inside."""
    from satvault.backup import backup

    url = get_settings().database_url
    result = _run(lambda step: backup(url, to, progress=step))
    emit(result.as_dict())


def restore_cmd(
    source: Annotated[Path, typer.Option("--from", help="The backup file.")],
    into: Annotated[str | None, typer.Option(
        help="Database URL to restore into (default: the configured database). PostgreSQL: "
             "created if it does not exist.")] = None,
    force: Annotated[bool, typer.Option(
        help="Replace a target that already holds tables (stop satvault first).")] = False,
    discard_newer: Annotated[bool, typer.Option(
        "--discard-newer", help="With --force: replace a database whose ledger moved after "
                                "the backup was made, forgetting what it did since (settle "
                                "with the nodes before serving).")] = False,
    verify_only: Annotated[bool, typer.Option(
        "--verify-only", help="Only check the file (manifest, revision, checksum); restore "
                              "nothing.")] = False,
) -> None:
    """Restore a `satvault backup` file into an empty database.

    The file's checksum and schema revision are checked first; a target that holds tables is
    refused unless --force. Then run `satvault ledger check` (and `satvault db upgrade` if
    the backup is older than this satvault)."""
    from satvault.backup import restore, verify

    if verify_only:
        manifest = _run(lambda step: verify(source, progress=step))
        emit({"ok": True, "verified": True, "file": str(source), "manifest": manifest.as_dict()})
        return
    target = into or get_settings().database_url
    result = _run(lambda step: restore(source, target, force=force,
                                       discard_newer=discard_newer, progress=step))
    emit(result.as_dict())
