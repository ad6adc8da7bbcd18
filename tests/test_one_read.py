"""``satvault.db.one_read``: a single read without a transaction around it on PostgreSQL
(no BEGIN and no ROLLBACK round trip: the pre-reads of a payment and of a wallet invoice),
and the connection it used back in ordinary transactions afterwards."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from satvault.composition import open_sessions
from satvault.db import create_engine, one_read, unit_of_work

# The id of the transaction a statement runs in (one is assigned if it has none yet): in
# autocommit every statement is a transaction of its own, inside a BEGIN they share one.
_XID = text("SELECT txid_current()")


async def test_one_read_reads_what_is_committed(db_url: str) -> None:
    engine = create_engine(db_url, pool_size=1)
    sessions = open_sessions(engine)
    try:
        async with unit_of_work(sessions) as s:
            await s.execute(text("CREATE TABLE one_read_probe (v integer)"))
            await s.execute(text("INSERT INTO one_read_probe VALUES (7)"))
        async with one_read(sessions) as s:
            assert (await s.execute(text("SELECT v FROM one_read_probe"))).scalar_one() == 7
    finally:
        async with unit_of_work(sessions) as s:
            await s.execute(text("DROP TABLE IF EXISTS one_read_probe"))
        await engine.dispose()


async def test_one_read_is_no_transaction_and_leaves_none_behind(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=1)  # one connection: every session reuses it
    sessions = open_sessions(engine)
    try:
        async with sessions() as s:  # an ordinary session: its statements share a BEGIN
            assert (await s.execute(_XID)).scalar_one() == (await s.execute(_XID)).scalar_one()
        async with one_read(sessions) as s:  # (two statements only to show there is none)
            assert (await s.execute(_XID)).scalar_one() != (await s.execute(_XID)).scalar_one()
        # The connection went back to the pool in its ordinary mode: two statements of a
        # session share one transaction again, and a write rolls back with it.
        async with sessions() as s:
            assert (await s.execute(_XID)).scalar_one() == (await s.execute(_XID)).scalar_one()
        with pytest.raises(RuntimeError):
            async with unit_of_work(sessions) as s:
                await s.execute(text("CREATE TABLE one_read_rolled_back (v integer)"))
                raise RuntimeError("roll back")
        async with one_read(sessions) as s:
            assert (await s.execute(text(
                "SELECT to_regclass('one_read_rolled_back') IS NULL"))).scalar_one() is True
    finally:
        await engine.dispose()
