"""SIGKILL in the middle of a linked batch: the child process has written the transfers and
is about to update balances when it is killed (the general path), or has sent the set-based
batch's one statement, transfers and balances, and not committed it (PostgreSQL's set-based
path). Nothing of the batch may remain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select

from satvault.ledger.check import check_ledger
from satvault.ledger.models import LedgerTransfer
from tests.conftest import PG_URL
from tests.factories import account, books
from tests.waiting import wait_until

CHILD = textwrap.dedent("""
    import asyncio, sys, threading
    from sqlalchemy import event
    from satvault.db import create_engine, session_factory
    from satvault.ledger.core import TransferSpec
    import satvault.ledger.store as store
    from satvault.ledger.store import create_transfers

    url, alice, bob, fees, flag = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
    mode = sys.argv[6]

    async def general_only(*_args, **_kw):
        return None

    async def main():
        engine = create_engine(url, pool_size=1)

        if mode == "general":
            store.create_plain_batch = general_only

            @event.listens_for(engine.sync_engine, "before_cursor_execute")
            def pause(conn, cursor, statement, params, context, executemany):
                if statement.lstrip().upper().startswith("UPDATE LEDGER_ACCOUNTS"):
                    open(flag, "w").write("inserted, about to update balances")
                    threading.Event().wait()  # the parent kills us here
        else:
            @event.listens_for(engine.sync_engine, "after_cursor_execute")
            def pause(conn, cursor, statement, params, context, executemany):
                if statement.lstrip().upper().startswith("WITH T AS"):
                    open(flag, "w").write("the whole batch written, not committed")
                    threading.Event().wait()  # the parent kills us here

        sessions = session_factory(engine)
        async with sessions() as s, s.begin():
            await create_transfers(s, [
                TransferSpec("crash:pay", alice, bob, 600, "BTC", linked=True),
                TransferSpec("crash:fee", alice, fees, 6, "BTC"),
            ])

    asyncio.run(main())
""")


async def test_sigkill_mid_linked_batch_leaves_nothing_partial(sessions, db_url, tmp_path: Path):
    await killed_mid_batch(sessions, db_url, tmp_path, "general")


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL only: set SATVAULT_TEST_POSTGRES_URL")
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_sigkill_after_the_set_based_batch_leaves_nothing(sessions, db_url,
                                                                tmp_path: Path):
    await killed_mid_batch(sessions, db_url, tmp_path, "set")


async def killed_mid_batch(sessions, db_url: str, tmp_path: Path, mode: str) -> None:
    b = await books(sessions, wallets=2, fund=1_000)
    alice, bob = b.wallets
    flag = tmp_path / "flag"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, str(alice.id), str(bob.id),
         str(b.platform.fees.id), str(flag), mode], env=env)
    try:
        wait_until(lambda: flag.exists() or child.poll() is not None, timeout=30,
                   message="child never reached the pause point")
        assert child.poll() is None, "child exited before reaching the pause point"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    # On PostgreSQL the server notices the dead connection and rolls its transaction back;
    # on SQLite the WAL never saw a commit. Either way the locks are released.
    async with sessions() as s:
        n = (await s.execute(select(func.count()).select_from(LedgerTransfer)
                             .where(LedgerTransfer.id.like("crash:%")))).scalar_one()
        report = await check_ledger(s)
    assert n == 0
    assert report.ok, report.as_dict()
    a = await account(sessions, alice.id)
    assert a.balances.debits_posted == 0 and a.balances.credits_posted == 1_000
    # And the accounts are usable again at once (no lock left behind).
    from satvault.ledger.core import TransferSpec
    from satvault.ledger.store import submit_one
    await submit_one(sessions, TransferSpec("after", alice.id, bob.id, 600, "BTC"))
