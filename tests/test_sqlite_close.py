"""A SQLite connection closed twice (a client leaving an event stream while its connection was
being thrown away) says nothing the second time. Found from outside: each such disconnect
logged an error-level "Future exception was never retrieved … Cannot operate on a closed
database", from the close that ends the transaction first."""

from __future__ import annotations

import sqlite3

from sqlalchemy import text

from satvault.db import create_engine


async def test_closing_a_connection_twice_is_quiet(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'twice.db'}")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("CREATE TABLE t (x int)"))
            raw = await conn.get_raw_connection()
            sqlite_conn = raw.driver_connection._conn  # aiosqlite's thread's connection
            assert isinstance(sqlite_conn, sqlite3.Connection)
            await conn.execute(text("INSERT INTO t VALUES (1)"))  # a transaction is open

            def close_twice() -> None:
                sqlite_conn.close()  # ends the transaction, then closes
                sqlite_conn.close()  # closed already: nothing to end, nothing raised

            await raw.driver_connection._execute(close_twice)
            await conn.invalidate()
    finally:
        await engine.dispose()
