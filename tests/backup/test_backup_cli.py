"""``satvault backup`` / ``satvault restore`` through the command line, on both databases:
the file and its manifest, the round trip, and every refusal (nothing written on any)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault import __version__
from satvault.db import create_engine
from satvault.ledger.core import TransferSpec
from satvault.ledger.store import submit
from satvault.migrate import head_revision
from tests.backup.conftest import Cli
from tests.conftest import BACKENDS
from tests.factories import books


async def _balances(url: str) -> dict[str, int] | None:
    """Every ledger account's posted balance by name; None when there is no database or no
    schema there."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT name, credits_posted - debits_posted FROM ledger_accounts"))
            return {name: int(balance) for name, balance in rows}
    except DBAPIError:
        return None
    finally:
        await engine.dispose()


async def _populate(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    made = await books(sessions, wallets=3, fund=50_000)
    a, b, c = (w.id for w in made.wallets)
    outcomes = await submit(sessions, [
        TransferSpec(id="t1", debit_account_id=a, credit_account_id=b, amount=1_234, asset="BTC"),
        TransferSpec(id="t2", debit_account_id=b, credit_account_id=c, amount=99, asset="BTC")])
    assert all(o.ok for o in outcomes)
    return {"a": a, "b": b, "c": c}


def _rewrite(src: Path, dest: Path, *, manifest: dict[str, Any] | None = None,
             manifest_text: str | None = None, flip_dump_byte: bool = False) -> None:
    """A copy of the archive with its manifest replaced (by a dict, or by text as given) or
    one byte of its dump changed."""
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    with tarfile.open(dest, "w") as out:
        for member, body in members:
            if member.name == "manifest.json" and manifest_text is not None:
                body = manifest_text.encode()
            elif member.name == "manifest.json" and manifest is not None:
                body = json.dumps(manifest).encode()
            elif member.name != "manifest.json" and flip_dump_byte:
                body = body[:200] + bytes([body[200] ^ 0xFF]) + body[201:]
            member.size = len(body)
            out.addfile(member, io.BytesIO(body))


async def test_round_trip_and_the_manifest(sessions: async_sessionmaker[AsyncSession],
                                           db_url: str, target_url: str, tmp_path: Path,
                                           cli: Cli) -> None:
    await _populate(sessions)
    before = await _balances(db_url)
    file = tmp_path / "backups" / "satvault.tar"
    code, body, stderr = await asyncio.to_thread(cli, "backup", "--to", str(file), url=db_url)
    assert code == 0, (body, stderr)
    assert "backup_finished" in stderr  # the structured log, on stderr
    kind = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    manifest = body["manifest"]
    assert manifest["kind"] == kind and manifest["revision"] == head_revision()
    assert manifest["satvault_version"] == __version__ and manifest["created_at"]
    assert stat.S_IMODE(file.stat().st_mode) == 0o600  # it holds secrets
    with tarfile.open(file) as tar:
        assert [m.name for m in tar.getmembers()] == ["manifest.json", manifest["dump"]["name"]]
        dump = tar.extractfile(manifest["dump"]["name"]).read()  # type: ignore[union-attr]
        assert json.loads(tar.extractfile("manifest.json").read()) == manifest  # type: ignore[union-attr]
    assert hashlib.sha256(dump).hexdigest() == manifest["dump"]["sha256"]
    assert len(dump) == manifest["dump"]["bytes"]
    assert not [p for p in file.parent.iterdir() if p != file]  # no temporary left behind

    code, verified, _ = await asyncio.to_thread(cli, "restore", "--from", str(file),
                                                "--verify-only", url=target_url)
    assert code == 0 and verified["verified"] and await _balances(target_url) is None

    code, done, stderr = await asyncio.to_thread(cli, "restore", "--from", str(file),
                                                 "--into", target_url, url=db_url)
    assert code == 0, (done, stderr)
    assert done["up_to_date"] and done["revision"] == head_revision()
    assert "restore_finished" in stderr
    assert await _balances(target_url) == before
    if target_url.startswith("sqlite"):  # as private as the archive (found from outside)
        restored = Path(target_url.split("///", 1)[-1])
        assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    code, report, _ = await asyncio.to_thread(cli, "ledger", "check", url=target_url)
    assert code == 0 and report["ok"]


async def test_refusals_change_nothing(sessions: async_sessionmaker[AsyncSession], db_url: str,
                                       target_url: str, tmp_path: Path, cli: Cli) -> None:
    await _populate(sessions)
    file = tmp_path / "good.tar"
    code, body, _ = await asyncio.to_thread(cli, "backup", "--to", str(file), url=db_url)
    assert code == 0
    manifest = body["manifest"]

    async def refused(archive: Path, *extra: str, into: str = target_url) -> str:
        code, answer, _ = await asyncio.to_thread(cli, "restore", "--from", str(archive),
                                                  "--into", into, *extra, url=db_url)
        assert code == 1 and answer["ok"] is False, answer
        return str(answer["error"])

    damaged = tmp_path / "damaged.tar"
    _rewrite(file, damaged, flip_dump_byte=True)
    assert "does not match its manifest" in await refused(damaged)
    assert "does not match its manifest" in await refused(damaged, "--verify-only")

    newer = tmp_path / "newer.tar"
    _rewrite(file, newer, manifest={**manifest, "revision": "2099_01_01_9999_future"})
    error = await refused(newer)
    assert "newer satvault" in error and "2099_01_01_9999_future" in error

    other_format = tmp_path / "v2.tar"
    _rewrite(file, other_format, manifest={**manifest, "format_version": 2})
    assert "format version 2" in await refused(other_format)

    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    assert "not a satvault backup" in await refused(junk)
    # Found from outside: a file cut short (a copy that stopped) crashed with a traceback.
    truncated = tmp_path / "truncated.tar"
    data = file.read_bytes()
    truncated.write_bytes(data[:len(data) * 2 // 3])
    assert "damaged" in await refused(truncated)
    assert "damaged" in await refused(truncated, "--verify-only")
    assert "no backup file" in await refused(tmp_path / "missing.tar")

    other_kind = ("postgresql://nobody@127.0.0.1:1/never" if db_url.startswith("sqlite")
                  else f"sqlite:///{tmp_path / 'never.db'}")
    assert "cannot be restored into" in await refused(file, into=other_kind)
    assert not (tmp_path / "never.db").exists()

    assert await _balances(target_url) is None  # none of the above wrote anything

    if db_url.startswith("sqlite"):
        # Found from outside: a backup written over the live database itself replaced it
        # with the archive and said ok. Refused, the database (and its journal) untouched.
        live = Path(db_url.split("///", 1)[1])
        before = await _balances(db_url)
        for onto in (live, Path(f"{live}-wal")):
            code, answer, _ = await asyncio.to_thread(cli, "backup", "--to", str(onto),
                                                      url=db_url)
            assert code == 1 and "is the database" in answer["error"], answer
        assert await _balances(db_url) == before

    # A target with tables: refused, then replaced with --force.
    code, _, _ = await asyncio.to_thread(cli, "restore", "--from", str(file), "--into",
                                         target_url, url=db_url)
    assert code == 0
    restored = await _balances(target_url)
    engine = create_engine(target_url, pool_size=1)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE ledger_accounts SET credits_posted = credits_posted + 7 "
                                "WHERE name LIKE 'test:wallet:%'"))
    await engine.dispose()
    assert "already holds" in await refused(file)
    assert await _balances(target_url) != restored
    code, again, _ = await asyncio.to_thread(cli, "restore", "--from", str(file), "--into",
                                             target_url, "--force", url=db_url)
    assert code == 0, again
    assert await _balances(target_url) == restored


@pytest.mark.parametrize("db_url", [b for b in BACKENDS if b == "sqlite"], indirect=True)
async def test_a_manifest_with_a_field_of_the_wrong_type_or_range_is_refused(
        sessions: async_sessionmaker[AsyncSession], db_url: str, tmp_path: Path,
        cli: Cli) -> None:
    """Found from outside: ``"bytes": Infinity`` in the manifest (Python's json reads it as a
    float) crashed verify and restore with OverflowError instead of naming the manifest.
    Every field is now checked for its type and range, and JSON's non-standard constants
    refused. (The manifest is read the same way whatever the database: SQLite only.)"""
    await _populate(sessions)
    file = tmp_path / "good.tar"
    code, body, _ = await asyncio.to_thread(cli, "backup", "--to", str(file), url=db_url)
    assert code == 0
    good = body["manifest"]

    def with_dump(**fields: Any) -> dict[str, Any]:
        return {**good, "dump": {**good["dump"], **fields}}

    raw_bytes = ["Infinity", "-Infinity", "NaN", "1e400", "-1", "1.5", str(2**64), "true",
                 '"123"', "null"]
    texts = [json.dumps(with_dump(bytes="@@")).replace('"@@"', v) for v in raw_bytes]
    texts.append(json.dumps({**good, "server_version": "@@"}).replace('"@@"', "NaN"))
    bad = [with_dump(sha256="zz" * 32), with_dump(sha256=7), with_dump(name=7),
           with_dump(name="../database.sqlite3"), {**good, "dump": [good["dump"]]},
           {**good, "format_version": True}, {**good, "format_version": 1.0},
           {**good, "kind": ["sqlite"]}, {**good, "created_at": 5},
           {**good, "created_at": "yesterday"}, {**good, "satvault_version": {"v": 1}},
           {**good, "revision": 12}, {**good, "server_version": ["16"]},
           {**good, "ledger_newest_at": "yesterday"}, {**good, "ledger_newest_at": 5}]
    texts += [json.dumps(m) for m in bad]
    for i, text_ in enumerate(texts):
        archive = tmp_path / f"bad{i}.tar"
        _rewrite(file, archive, manifest_text=text_)
        for extra in (("--verify-only",), ("--into", f"sqlite:///{tmp_path / 'never.db'}")):
            code, answer, _ = await asyncio.to_thread(cli, "restore", "--from", str(archive),
                                                      *extra, url=db_url)
            assert code == 1 and answer.get("ok") is False, (text_, answer)
            assert "manifest" in answer["error"] or "format version" in answer["error"], \
                (text_, answer)
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("db_url", [b for b in BACKENDS if b == "postgres"], indirect=True)
async def test_postgres_tools_missing_or_too_old(db_url: str, tmp_path: Path, cli: Cli,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite needs no outside tool; PostgreSQL needs pg_dump of the server's major or newer."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    code, body, _ = await asyncio.to_thread(cli, "backup", "--to", str(tmp_path / "x.tar"),
                                            url=db_url)
    assert code == 1 and "pg_dump is not installed" in body["error"]
    old = bin_dir / "pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    old.chmod(0o755)
    code, body, _ = await asyncio.to_thread(cli, "backup", "--to", str(tmp_path / "x.tar"),
                                            url=db_url)
    assert code == 1 and "pg_dump 9 cannot handle a PostgreSQL" in body["error"]
    assert not (tmp_path / "x.tar").exists()


async def _restored_once(sessions: async_sessionmaker[AsyncSession], db_url: str,
                         target_url: str, tmp_path: Path, cli: Cli
                         ) -> tuple[Path, dict[str, Any], dict[str, int]]:
    """A populated database backed up, and restored into ``target_url``: the archive, its
    manifest and the restored balances."""
    await _populate(sessions)
    file = tmp_path / "good.tar"
    code, body, _ = await asyncio.to_thread(cli, "backup", "--to", str(file), url=db_url)
    assert code == 0
    code, _, _ = await asyncio.to_thread(cli, "restore", "--from", str(file), "--into",
                                         target_url, url=db_url)
    assert code == 0
    restored = await _balances(target_url)
    assert restored is not None
    return file, body["manifest"], restored


async def test_a_dump_the_tool_cannot_finish_leaves_the_target_as_it_was(
        sessions: async_sessionmaker[AsyncSession], db_url: str, target_url: str,
        tmp_path: Path, cli: Cli) -> None:
    """Found from outside: ``restore --force`` on PostgreSQL dropped the target's schema and
    committed that before pg_restore ran, so a dump it could not finish (cut short, then
    resealed with a manifest that matches it: the checksum is no signature) left an empty
    database. The replaced schema now goes in the restore's own transaction."""
    file, manifest, restored = await _restored_once(sessions, db_url, target_url, tmp_path, cli)
    with tarfile.open(file) as tar:
        dump = tar.extractfile(manifest["dump"]["name"]).read()  # type: ignore[union-attr]
    cut = dump[:len(dump) * 2 // 3]
    resealed = tmp_path / "resealed.tar"
    with tarfile.open(resealed, "w") as out:
        for name, data in (("manifest.json", json.dumps({**manifest, "dump": {
                **manifest["dump"], "bytes": len(cut),
                "sha256": hashlib.sha256(cut).hexdigest()}}).encode()),
                           (manifest["dump"]["name"], cut)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    code, answer, _ = await asyncio.to_thread(cli, "restore", "--from", str(resealed),
                                              "--into", target_url, "--force", url=db_url)
    assert code == 1 and answer["ok"] is False, answer
    assert await _balances(target_url) == restored


async def test_a_database_in_use_is_not_replaced(
        sessions: async_sessionmaker[AsyncSession], db_url: str, target_url: str,
        tmp_path: Path, cli: Cli) -> None:
    """Found from outside: ``restore --force`` over the database a running ``serve`` used
    said ok, and the serve went on from the restored balances (its payout job paid a
    withdrawal from money already paid out). Refused while satvault serves the SQLite file
    (its lock) or while anything else is connected to the PostgreSQL database."""
    from satvault.db import hold_sqlite_in_use

    file, _, restored = await _restored_once(sessions, db_url, target_url, tmp_path, cli)
    if target_url.startswith("sqlite"):
        held = hold_sqlite_in_use(target_url)
        assert held is not None

        def release() -> None:
            os.close(held)
    else:
        engine = create_engine(target_url, pool_size=1)
        conn = await engine.connect()
        await conn.execute(text("SELECT 1"))

        async def close() -> None:
            await conn.close()
            await engine.dispose()
    names = [target_url]
    if target_url.startswith("sqlite"):
        # Found from outside: the same file by another name (a symlink, a hard link) was
        # replaced under a running serve; the lock is on the file itself now.
        served = Path(target_url.split("///", 1)[1])
        (tmp_path / "alias.db").symlink_to(served)
        os.link(served, tmp_path / "hard.db")
        names += [f"sqlite:///{tmp_path / 'alias.db'}", f"sqlite:///{tmp_path / 'hard.db'}"]
    try:
        for name in names:
            code, answer, _ = await asyncio.to_thread(cli, "restore", "--from", str(file),
                                                      "--into", name, "--force", url=db_url)
            assert code == 1 and answer["ok"] is False, (name, answer)
            assert "nothing was changed" in answer["error"], answer
        assert await _balances(target_url) == restored
    finally:
        if target_url.startswith("sqlite"):
            release()
        else:
            await close()
    code, again, _ = await asyncio.to_thread(cli, "restore", "--from", str(file), "--into",
                                             target_url, "--force", url=db_url)
    assert code == 0, again
