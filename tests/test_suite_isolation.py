"""The suite's own isolation on PostgreSQL: a test that failed with a transaction still open
must not hang the next test's wipe, which empties the tables and would wait for that
transaction's locks for ever (the run hung for minutes once, hiding the failure). The wipe
ends such leftovers first (``tests/conftest.py``: ``_LEFTOVERS``)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import text

from satvault.db import create_engine
from tests.conftest import wipe_pg


async def test_the_wipe_ends_a_transaction_left_open(pg_url):
    eng = create_engine(pg_url, pool_size=1)
    async with eng.begin() as c:
        await c.execute(text("INSERT INTO risk_address_labels (address, label, score, loaded_at)"
                             " VALUES ('leftover', 'test', 1, now())"))
    leaked = await eng.connect()
    await leaked.begin()
    await leaked.execute(text("LOCK TABLE risk_address_labels IN ACCESS SHARE MODE"))
    try:
        await asyncio.wait_for(wipe_pg(pg_url), timeout=30)  # hung here before
        check = create_engine(pg_url, pool_size=1)
        async with check.connect() as c:
            left = (await c.execute(text("SELECT count(*) FROM risk_address_labels"))).scalar()
        await check.dispose()
        assert left == 0
        with pytest.raises(Exception):  # noqa: B017 - its session was ended by the server
            await leaked.execute(text("SELECT 1"))
    finally:
        with contextlib.suppress(Exception):
            await leaked.close()
        await eng.dispose()
