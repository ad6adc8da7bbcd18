"""``satvault doctor``: is it safe to run? Every check with what it found and what to do, as a
table (``--format text``, the default) or one JSON object (``--format json``). Exit 0 when
nothing is an error, 1 when something is, 2 when the settings cannot be used.

``satvault doctor keygen --out KEY`` makes the Ed25519 key that signs the code manifest
(keep it off the servers); ``satvault doctor manifest --key KEY`` writes the signed manifest
of the installed package's files (a build step: ``make manifest``).
"""

from __future__ import annotations

import asyncio
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from satvault.cli._common import emit, fail
from satvault.config import get_settings

__all__ = ["app"]

app = typer.Typer(help="Check that this installation is safe to run; the code manifest.")


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"


_STYLE = {"ok": "green", "warn": "yellow", "error": "bold red"}


@app.callback(invoke_without_command=True)
def doctor(
    ctx: typer.Context,
    output: Annotated[Format, typer.Option(
        "--format", help="text (a table for people) or json (one object).")] = Format.TEXT,
    package_root: Annotated[Path | None, typer.Option(
        help="The code tree to verify (default: the installed satvault package).")] = None,
    manifest: Annotated[Path | None, typer.Option(
        help="Its signed manifest (default: code_manifest_file, else _manifest.json in "
             "the tree).")] = None,
) -> None:
    """Check the schema, nodes, clock, disk, books, signer and code; say what to do."""
    if ctx.invoked_subcommand is not None:
        return
    from satvault.composition import open_database
    from satvault.doctor import run_doctor

    settings = get_settings()

    async def go() -> dict[str, object]:
        engine, sessions = open_database(settings, pool_size=4)
        try:
            report = await run_doctor(settings, sessions, root=package_root, manifest=manifest)
        finally:
            await engine.dispose()
        return report.as_dict()

    try:
        result = asyncio.run(go())
    except ValueError as exc:  # settings naming an unknown backend
        fail(f"unusable settings: {exc}", 2)
    if output is Format.JSON:
        emit(result)
    else:
        _table(result)
    raise typer.Exit(int(str(result["exit_code"])))


def _table(result: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="satvault doctor", show_lines=True)
    for column in ("check", "status", "found", "what to do"):
        table.add_column(column, overflow="fold")
    checks = result["checks"]
    assert isinstance(checks, list)
    for c in checks:
        table.add_row(c["name"], f"[{_STYLE[c['status']]}]{c['status']}[/]", c["detail"],
                      c["action"])
    console = Console(file=sys.stdout, width=max(120, Console().width), highlight=False)
    console.print(table)
    errors = sum(c["status"] == "error" for c in checks)
    console.print("[green]safe to run[/]" if not errors else
                  f"[bold red]NOT safe to run: {errors} error(s)[/]")


@app.command("keygen")
def keygen(out: Annotated[Path, typer.Option(help="Where to write the new private key.")]
           ) -> None:
    """Make the Ed25519 key that signs code manifests (PEM, mode 0600); prints its public half
    for code_manifest_public_key."""
    from satvault.doctor.manifest import ManifestError, generate_key

    try:
        public = generate_key(out)
    except ManifestError as exc:
        fail(str(exc))
    emit({"ok": True, "key_file": str(out), "public_key": public})


@app.command("manifest")
def make(
    key: Annotated[Path, typer.Option(help="The Ed25519 private key (PEM, or 64 hex digits).")],
    out: Annotated[Path | None, typer.Option(
        help="Where to write it (default: _manifest.json inside the tree).")] = None,
    package_root: Annotated[Path | None, typer.Option(
        help="The tree to list (default: the installed satvault package).")] = None,
) -> None:
    """Write the signed manifest (every file's SHA-256) of the installed package."""
    from satvault import __version__
    from satvault.doctor.manifest import (
        ManifestError,
        default_manifest_path,
        load_private_key,
        write_manifest,
    )
    from satvault.doctor.manifest import package_root as installed

    root = (package_root or installed()).resolve()
    target = out or default_manifest_path(root)
    try:
        signed = write_manifest(root, load_private_key(key), target, version=__version__)
    except (ManifestError, OSError) as exc:
        fail(str(exc))
    emit({"ok": True, "manifest": str(target), "files": len(signed["manifest"]["files"]),
          "public_key": signed["public_key"]})
