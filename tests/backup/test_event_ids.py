"""Event ids after a restore: the restored database never hands out an id that was issued
before the restore (receivers deduplicate on it: a repeated id names another event and is
dropped). Through ``satvault restore`` and ``satvault events rebase-ids``, on both
databases."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.composition import open_sessions
from satvault.db import create_engine, utcnow
from satvault.events.outbox import emit
from satvault.migrate import upgrade
from tests.backup.conftest import Cli


async def _emit(sessions: async_sessionmaker[AsyncSession], n: int = 1, *,
                store_id: str | None = None) -> list[int]:
    ids = []
    for i in range(n):
        async with sessions() as s, s.begin():
            ids.append(await emit(s, type="invoice.created", subject_type="invoice",
                                  subject_id=f"inv_{i}", payload={"id": f"inv_{i}"},
                                  store_id=store_id))
    return ids


async def _emit_at(url: str, n: int = 1) -> list[int]:
    engine = create_engine(url, pool_size=1)
    try:
        return await _emit(open_sessions(engine), n)
    finally:
        await engine.dispose()


async def test_a_restored_database_never_reissues_an_event_id(
        sessions: async_sessionmaker[AsyncSession], db_url: str, target_url: str,
        tmp_path: Path, cli: Cli) -> None:
    before_backup = await _emit(sessions, 2)
    file = tmp_path / "satvault.tar"
    code, body, stderr = await asyncio.to_thread(cli, "backup", "--to", str(file), url=db_url)
    assert code == 0, (body, stderr)
    delivered = await _emit(sessions, 3)  # issued (and sent to receivers) after the backup
    assert min(delivered) > max(before_backup)

    code, done, stderr = await asyncio.to_thread(cli, "restore", "--from", str(file),
                                                 "--into", target_url, url=db_url)
    assert code == 0, (done, stderr)
    assert done["event_ids"]["moved"] is True
    assert done["event_ids"]["last_id_before"] == max(before_backup)
    first_after = await _emit_at(target_url, 2)
    assert min(first_after) == done["event_ids"]["next_id"]
    assert min(first_after) > max(delivered)  # before the fix: max(before_backup) + 1

    # restored again from the same backup (a second drill, or a restore gone wrong): the
    # ids issued by the first restored database are not reissued either
    code, again, stderr = await asyncio.to_thread(cli, "restore", "--from", str(file),
                                                  "--into", target_url, "--force", url=db_url)
    assert code == 0, (again, stderr)
    assert min(await _emit_at(target_url)) > max(first_after)


async def test_rebase_ids_moves_on_and_never_back(
        sessions: async_sessionmaker[AsyncSession], db_url: str, cli: Cli) -> None:
    [first] = await _emit(sessions)
    code, moved, stderr = await asyncio.to_thread(cli, "events", "rebase-ids", url=db_url)
    assert code == 0, (moved, stderr)
    assert moved["ok"] and moved["moved"] and moved["last_id_before"] == first
    [second] = await _emit(sessions)
    assert second == moved["next_id"] > first + 1_000_000

    # a counter ahead of the clock's floor (ids issued faster than it, or a clock set back)
    # is left where it is
    far = second + 10**12
    async with sessions() as s, s.begin():
        if s.get_bind().dialect.name == "postgresql":
            await s.execute(text("SELECT setval(pg_get_serial_sequence('outbox_events', "
                                 "'id'), :v)"), {"v": far})
        else:
            await s.execute(text("UPDATE sqlite_sequence SET seq = :v "
                                 "WHERE name = 'outbox_events'"), {"v": far})
    code, kept, _ = await asyncio.to_thread(cli, "events", "rebase-ids", url=db_url)
    assert code == 0 and kept["moved"] is False and kept["next_id"] == far + 1
    assert await _emit(sessions) == [far + 1]


def _sqlite_at(path: Path, revision: str) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url, revision)
    return url


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(sql))


async def test_the_sqlite_outbox_is_rebuilt_with_its_rows_and_deliveries(
        tmp_path: Path, cli: Cli) -> None:
    """0066 rebuilds SQLite's outbox as AUTOINCREMENT: its events and the deliveries that
    refer to them come through; before it, rebase-ids refuses clearly and moves nothing."""
    path = tmp_path / "old.db"
    url = await asyncio.to_thread(_sqlite_at, path, "0064_reserved_invoices")
    engine = create_engine(url, pool_size=1)
    try:
        sessions = open_sessions(engine)
        async with sessions() as s, s.begin():
            merchant = await acc.create_merchant(s, name="Acme")
            store = await acc.create_store(s, merchant_id=merchant.id, name="Acme shop")
        async with sessions() as s, s.begin():  # the columns 0064 has (not the model's)
            await s.execute(text(
                "INSERT INTO webhooks (id, store_id, url, events, secret, enabled, created_at)"
                " VALUES ('whk_old', :store, 'http://127.0.0.1:9/hook', 'invoice.*', "
                "'whsec_test_secret_0123456789', 1, :at)"), {"store": store.id, "at": utcnow()})
        ids = await _emit(sessions, 3, store_id=store.id)
    finally:
        await engine.dispose()
    code, refused, _ = await asyncio.to_thread(cli, "events", "rebase-ids", url=url)
    assert code == 2 and "satvault db upgrade" in refused["error"]  # the schema is old

    await asyncio.to_thread(upgrade, url)
    assert "AUTOINCREMENT" in str(_rows(path, "SELECT sql FROM sqlite_master "
                                             "WHERE name = 'outbox_events'")[0][0]).upper()
    assert [r[0] for r in _rows(path, "SELECT id FROM outbox_events ORDER BY id")] == ids
    assert [r[0] for r in _rows(path, "SELECT event_id FROM webhook_deliveries "
                                      "ORDER BY event_id")] == ids
    assert _rows(path, "PRAGMA foreign_key_check") == []
    assert {r[1] for r in _rows(path, "PRAGMA index_list('outbox_events')")} >= {
        "ix_outbox_events_subject", "ix_outbox_events_wallet"}
    code, moved, _ = await asyncio.to_thread(cli, "events", "rebase-ids", url=url)
    assert code == 0 and moved["moved"] and moved["last_id_before"] == max(ids)
