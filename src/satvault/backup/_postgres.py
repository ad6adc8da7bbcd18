"""PostgreSQL through its own tools: ``pg_dump -Fc`` and ``pg_restore``.

The backup opens a REPEATABLE READ transaction, exports its snapshot and hands it to
``pg_dump --snapshot``: the dump, the Alembic revision recorded in the manifest and the
server version are all read from that one snapshot, taken when the backup starts, so every
transaction committed before then is in the dump and nothing committed later is. Writers
carry on meanwhile (pg_dump takes only ACCESS SHARE locks).

The restore lands whole or not at all, the replaced schema's removal included: ``pg_restore``
first lists the dump (a dump it cannot read is refused before anything is touched), then
writes it as SQL to ``psql``, which runs it after ``BEGIN`` and, with ``--force``, after
dropping and re-creating the ``public`` schema, in that one transaction; ``COMMIT`` is
written only once ``pg_restore`` finished without error. A failure, or the operator's Ctrl-C,
anywhere before leaves the database as it was (found from outside: the schema was dropped
and committed first, and a dump pg_restore could not finish left an empty database).
Connection details go to the tools through libpq's environment variables
(``PGHOST``, ``PGPASSWORD``…), never on a command line where ``ps`` would show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from satvault.backup.archive import NEWEST_TRANSFER
from satvault.backup.errors import TargetNotEmpty, ToolFailed, ToolMissing
from satvault.db import create_engine
from satvault.logs import get_logger

__all__ = ["client_major", "dump", "libpq_env", "newest_transfer", "other_sessions", "restore",
           "table_count", "target_tables"]

log = get_logger(__name__)
Step = Callable[[int, int | None], None]
_INSTALL = ("install PostgreSQL's client tools of the server's major version or newer "
            "(Debian: `apt-get install postgresql-client`, or `make pg-tools`)")


def libpq_env(url: str, *, database: str | None = None) -> dict[str, str]:
    """The environment for pg_dump/pg_restore/psql reaching the database of ``url``."""
    u = make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"PGHOST": u.host or "localhost", "PGPORT": str(u.port or 5432),
                "PGDATABASE": database or u.database or "", "PGCONNECT_TIMEOUT": "10",
                "PGAPPNAME": "satvault-backup"})
    if u.username:
        env["PGUSER"] = u.username
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    ssl = u.query.get("ssl") or u.query.get("sslmode")
    if isinstance(ssl, str):
        env["PGSSLMODE"] = ssl
    return env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} is not installed: {_INSTALL}")
    return found


async def client_major(name: str) -> int:
    proc = await asyncio.create_subprocess_exec(_tool(name), "--version",
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    match = re.search(rb"(\d+)(?:\.\d+)?", out)
    if proc.returncode != 0 or match is None:
        raise ToolMissing(f"`{name} --version` did not answer with a version: {_INSTALL}")
    return int(match.group(1))


async def _server_major(conn: AsyncConnection) -> tuple[int, str]:
    num = int((await conn.execute(text("SHOW server_version_num"))).scalar_one())
    version = str((await conn.execute(text("SHOW server_version"))).scalar_one())
    return num // 10000, version


async def _check_tool(name: str, conn: AsyncConnection) -> str:
    client, (server, version) = await client_major(name), await _server_major(conn)
    if client < server:
        raise ToolMissing(f"{name} {client} cannot handle a PostgreSQL {server} server: "
                          f"{_INSTALL}")
    return version


async def table_count(conn: AsyncConnection) -> int:
    return int((await conn.execute(text(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'"))).scalar_one())


async def _revision(conn: AsyncConnection) -> str | None:
    if not (await conn.execute(text("SELECT to_regclass('alembic_version')"))).scalar_one():
        return None
    return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()


async def _run(argv: list[str], env: dict[str, str], *, on_line: Callable[[str], None]
               | None = None, watch: Path | None = None, step: Step | None = None) -> None:
    """Run a PostgreSQL tool; its stderr lines go to ``on_line`` and, on failure, into the
    error. With ``watch``, ``step`` is told that file's size every half second."""
    proc = await asyncio.create_subprocess_exec(*argv, env=env,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    errors: list[str] = []

    async def read_stderr() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if "error:" in line or "FATAL" in line or "fatal:" in line:
                errors.append(line)
            if on_line:
                on_line(line)

    async def watch_size() -> None:
        while watch is not None and step is not None:
            await asyncio.sleep(0.5)
            with contextlib.suppress(OSError):
                step(watch.stat().st_size, None)

    reader, watcher = asyncio.create_task(read_stderr()), asyncio.create_task(watch_size())
    try:
        code = await proc.wait()
        await reader
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if code != 0:
        detail = "; ".join(errors[-5:]) or f"exit code {code}"
        raise ToolFailed(f"{Path(argv[0]).name} failed: {detail}")


async def dump(url: str, out: Path, *, step: Step | None = None
               ) -> tuple[str | None, str, datetime | None]:
    """``pg_dump -Fc`` of the database at ``url`` into ``out``, from a snapshot taken now;
    returns (the snapshot's Alembic revision, the server's version, its newest ledger
    transfer's time)."""
    pg_dump = _tool("pg_dump")
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            version = await _check_tool("pg_dump", conn)
            await conn.commit()
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                await conn.execute(text("SET TRANSACTION READ ONLY"))
                snapshot = (await conn.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
                revision = await _revision(conn)
                newest = None if revision is None else (await conn.execute(text(
                    NEWEST_TRANSFER))).scalar_one()
                log.info("backup_snapshot", snapshot=snapshot, revision=revision)
                # The snapshot lives as long as this transaction: pg_dump imports it first
                # thing, and this waits for pg_dump to finish before letting go.
                await _run([pg_dump, "--format=custom", "--no-owner", "--no-privileges",
                            f"--snapshot={snapshot}", f"--file={out}"],
                           libpq_env(url), watch=out, step=step)
    except DBAPIError as exc:
        raise ToolFailed(f"PostgreSQL refused the backup: {exc.orig}") from exc
    finally:
        await engine.dispose()
    return revision, version, None if newest is None else newest.astimezone(UTC)


@contextlib.asynccontextmanager
async def _target(url: str) -> AsyncIterator[AsyncConnection]:
    """A connection to the target database, created first if it does not exist."""
    engine = create_engine(url, pool_size=1)
    try:
        try:
            conn = await engine.connect()
        except DBAPIError as exc:
            if "does not exist" not in str(exc.orig):
                raise
            await _create_database(url)
            conn = await engine.connect()
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        await engine.dispose()


async def _create_database(url: str) -> None:
    u = make_url(url)
    name = u.database or ""
    admin = create_engine(u.set(database="postgres").render_as_string(hide_password=False),
                          pool_size=1)
    try:
        async with admin.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            quoted = '"' + name.replace('"', '""') + '"'
            await conn.execute(text(f"CREATE DATABASE {quoted}"))
            log.info("restore_database_created", database=name)
    finally:
        await admin.dispose()


async def target_tables(url: str) -> int:
    """How many tables the database at ``url`` holds (0 when it does not exist yet)."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await table_count(conn)
    except DBAPIError as exc:
        if "does not exist" in str(exc.orig):
            return 0
        raise ToolFailed(f"cannot reach the target database: {exc.orig}") from exc
    finally:
        await engine.dispose()


async def newest_transfer(url: str) -> datetime | None:
    """When the newest ledger transfer of the database at ``url`` was made (None: no such
    database, no schema, no transfer)."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            at = (await conn.execute(text(NEWEST_TRANSFER))).scalar_one()
    except DBAPIError as exc:
        if "does not exist" in str(exc.orig):
            return None
        raise ToolFailed(f"cannot reach the target database: {exc.orig}") from exc
    finally:
        await engine.dispose()
    return None if at is None else at.astimezone(UTC)


async def other_sessions(url: str) -> list[str]:
    """The application names of the other sessions connected to the database at ``url`` (none
    when it does not exist yet)."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT coalesce(nullif(application_name, ''), client_addr::text, 'local') "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"))).scalars()
            return [str(name) for name in rows]
    except DBAPIError as exc:
        if "does not exist" in str(exc.orig):
            return []
        raise ToolFailed(f"cannot reach the target database: {exc.orig}") from exc
    finally:
        await engine.dispose()


async def restore(dump_file: Path, url: str, *, force: bool, step: Step | None = None
                  ) -> str | None:
    """``pg_restore`` ``dump_file`` into the database at ``url`` (created if missing; it
    must hold no tables unless ``force``, which drops the ``public`` schema first). Returns the
    restored Alembic revision."""
    pg_restore, psql = _tool("pg_restore"), _tool("psql")
    env = libpq_env(url)
    try:
        async with _target(url) as conn:
            await _check_tool("pg_restore", conn)
            tables = await table_count(conn)
            if tables and not force:
                raise TargetNotEmpty(
                    f"the database {make_url(url).database} already holds {tables} tables: "
                    "restore into a new database, or pass --force to replace them "
                    "(stop satvault first)")
            await conn.commit()
            # Read whole before anything is dropped: a dump pg_restore cannot list is refused.
            total = await _toc_entries(pg_restore, dump_file, env)
            done = 0

            def on_line(line: str) -> None:
                nonlocal done
                if line.startswith("pg_restore: ") and "error" not in line:
                    done += 1
                    if step:
                        step(min(done, total), total)

            await _load_in_one_transaction(pg_restore, psql, dump_file, env,
                                           clear=bool(tables), on_line=on_line)
            if tables:
                log.warning("restore_target_replaced", database=make_url(url).database,
                            tables=tables)
            if step:
                step(total, total)
            await conn.rollback()
            return await _revision(conn)
    except DBAPIError as exc:
        raise ToolFailed(f"PostgreSQL refused the restore: {exc.orig}") from exc


async def _load_in_one_transaction(pg_restore: str, psql: str, dump_file: Path,
                                   env: dict[str, str], *, clear: bool,
                                   on_line: Callable[[str], None]) -> None:
    """``pg_restore``'s SQL, piped through here into ``psql`` inside one transaction (after
    the ``public`` schema's removal when ``clear``), committed only if pg_restore succeeded:
    psql alone would commit whatever it had read when its input ended early."""
    producer = await asyncio.create_subprocess_exec(
        pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "--verbose",
        "--file=-", str(dump_file), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    consumer = await asyncio.create_subprocess_exec(
        psql, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", f"--dbname={env['PGDATABASE']}",
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    assert producer.stdout and producer.stderr and consumer.stdin and consumer.stderr
    errors: list[str] = []

    async def read_errors(stream: asyncio.StreamReader, tell: bool) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if "error:" in line or "ERROR" in line or "FATAL" in line or "fatal:" in line:
                errors.append(line)
            if tell:
                on_line(line)

    readers = [asyncio.create_task(read_errors(producer.stderr, True)),
               asyncio.create_task(read_errors(consumer.stderr, False))]
    try:
        sink = consumer.stdin
        sink.write(b"BEGIN;\n")
        if clear:
            sink.write(b"DROP SCHEMA public CASCADE;\nCREATE SCHEMA public;\n")
        while chunk := await producer.stdout.read(1 << 16):
            sink.write(chunk)
            await sink.drain()
        made = await producer.wait()
        if made == 0:
            sink.write(b"\nCOMMIT;\n")
        else:
            sink.write(b"\nROLLBACK;\n")
        await sink.drain()
        sink.close()
        loaded = await consumer.wait()
        await asyncio.gather(*readers)
    except BaseException:
        for proc in (producer, consumer):  # psql gone before COMMIT: nothing is applied
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for task in readers:
            task.cancel()
        raise
    if made != 0 or loaded != 0:
        detail = "; ".join(errors[-5:]) or f"exit codes {made}, {loaded}"
        raise ToolFailed(f"the restore was rolled back, the database is as it was: {detail}")


async def _toc_entries(pg_restore: str, dump_file: Path, env: dict[str, Any]) -> int:
    proc = await asyncio.create_subprocess_exec(pg_restore, "--list", str(dump_file), env=env,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ToolFailed(f"pg_restore cannot read the dump: {err.decode(errors='replace')}")
    return sum(1 for line in out.decode().splitlines() if line and not line.startswith(";"))
