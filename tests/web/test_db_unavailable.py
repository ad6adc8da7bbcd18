"""No connection to the database in time is a 503 the client may retry, never a 500: found
from outside, PostgreSQL at its connection ceiling ("too many clients") answered internal
errors under load."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

from satvault.accounts import service as acc
from satvault.db import async_database_url
from satvault.kernel.retrying import db_unavailable
from tests.web.test_api import auth, client_for


async def test_no_free_connection_is_a_503_to_retry(sessions, db_url):
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="busy@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
        _, key = await acc.create_api_key(s, owner_id=user.id, scopes=["wallet:read"])
    # One connection, and a short wait for it: the test holds it.
    tiny = create_async_engine(async_database_url(db_url), pool_size=1, max_overflow=0,
                               pool_timeout=0.3)
    try:
        async with client_for(tiny, db_url) as c:
            assert (await c.get(f"/api/v1/wallets/{wallet.id}",
                                headers=auth(key))).status_code == 200
            async with tiny.connect():
                r = await c.get(f"/api/v1/wallets/{wallet.id}", headers=auth(key))
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["type"].endswith("/busy") and r.headers["retry-after"] == "1"
            # Free again: answered as before.
            assert (await c.get(f"/api/v1/wallets/{wallet.id}",
                                headers=auth(key))).status_code == 200
    finally:
        await tiny.dispose()


def test_what_counts_as_no_connection():
    """The pool's timeout and the server's refusals before any statement ran (too many
    connections, starting up); a deadlock or a constraint is something else."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    class Orig(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    def db_error(code: str) -> DBAPIError:
        return DBAPIError("SELECT 1", {}, Orig(code))

    assert db_unavailable(PoolTimeout("QueuePool limit reached"))
    assert db_unavailable(db_error("53300")) and db_unavailable(db_error("57P03"))
    assert not db_unavailable(db_error("40P01")) and not db_unavailable(db_error("23505"))
    assert not db_unavailable(ValueError("x"))
