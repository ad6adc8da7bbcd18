"""Fixtures of the backup tests: a restore target that does not exist yet (a new SQLite file,
or a PostgreSQL database name that is dropped afterwards), and the ``satvault`` command run
in-process against a given database."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner, Result

from satvault.cli import app
from satvault.config import reset_settings_cache
from satvault.db import create_engine


async def _admin(url: str, statement: str, *, database: str = "postgres") -> None:
    u = make_url(url)
    engine = create_engine(u.set(database=database).render_as_string(hide_password=False),
                           pool_size=1)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _empty(url: str) -> None:
    """Empty the database at ``url`` if it exists (quicker than dropping it: no checkpoint)."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    except DBAPIError as exc:
        if "does not exist" not in str(exc.orig):
            raise
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_restore_url(pg_migrated: str) -> Iterator[str]:
    """One restore database for the session, left to ``satvault restore`` to create (the
    first restore into it does) and dropped at the end."""
    u = make_url(pg_migrated)
    name = f"{u.database}_restore_{secrets.token_hex(3)}"
    url = u.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def target_url(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> str:
    """Where to restore: the same kind of database as ``db_url``, holding nothing."""
    if db_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / 'restored' / 'satvault.db'}"
    url: str = request.getfixturevalue("pg_restore_url")
    asyncio.run(_empty(url))
    return url


class Cli:
    """``satvault …`` in this process, with SATVAULT_DATABASE_URL pointing at ``url``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
        self.monkeypatch, self.home, self.runner = monkeypatch, home, CliRunner()

    def __call__(self, *args: str, url: str) -> tuple[int, dict[str, Any], str]:
        self.monkeypatch.setenv("SATVAULT_HOME", str(self.home))
        self.monkeypatch.setenv("SATVAULT_DATABASE_URL", url)
        self.monkeypatch.delenv("SATVAULT_CONFIG", raising=False)
        reset_settings_cache()
        try:
            result: Result = self.runner.invoke(app, list(args))
        finally:
            reset_settings_cache()
        lines = result.stdout.strip().splitlines()
        body = json.loads(lines[-1]) if lines else {}
        return result.exit_code, body, result.stderr


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    return Cli(monkeypatch, tmp_path / "home")
