"""What a backup or a restore must not do to what it replaces (found from outside, stop 42):

* ``restore --force`` of an older backup over a newer database said ok: the withdrawals paid
  since were forgotten, the customer's balance was spendable again, and it was paid twice.
  Now refused while the target holds ledger transfers made after the backup began, unless
  ``--discard-newer`` says so;
* ``backup --to`` the signer's seed file replaced the encrypted seed with an archive and said
  ok. Now an existing file is replaced only if it is a backup;
* ``restore --into`` a file that is not a SQLite database printed a traceback."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.composition import open_sessions
from satvault.db import create_engine
from satvault.ledger.core import TransferSpec
from satvault.ledger.store import submit
from tests.backup.conftest import Cli
from tests.backup.test_backup_cli import _balances, _populate
from tests.conftest import BACKENDS


async def test_an_older_backup_is_not_restored_over_a_newer_database(
        sessions: async_sessionmaker[AsyncSession], db_url: str, target_url: str,
        tmp_path: Path, cli: Cli) -> None:
    ids = await _populate(sessions)
    file = tmp_path / "before.tar"
    code, _, _ = await asyncio.to_thread(cli, "backup", "--to", str(file), url=db_url)
    assert code == 0
    code, _, _ = await asyncio.to_thread(cli, "restore", "--from", str(file), "--into",
                                         target_url, url=db_url)
    assert code == 0
    at_backup = await _balances(target_url)
    # The restored database serves and moves money after the backup (a withdrawal paid,
    # say): the backup restored over it with --force would forget it.
    engine = create_engine(target_url, pool_size=1)
    try:
        assert all(o.ok for o in await submit(open_sessions(engine), [TransferSpec(
            id="after", debit_account_id=ids["a"], credit_account_id=ids["c"], amount=5_000,
            asset="BTC")]))
    finally:
        await engine.dispose()
    after = await _balances(target_url)
    assert after != at_backup

    code, answer, _ = await asyncio.to_thread(cli, "restore", "--from", str(file), "--into",
                                              target_url, "--force", url=db_url)
    assert code == 1 and answer["ok"] is False, answer
    assert "after this backup was made" in answer["error"]
    assert "--discard-newer" in answer["error"] and "nothing was changed" in answer["error"]
    assert await _balances(target_url) == after  # untouched

    # Said explicitly: replaced, and the transfer since is gone as asked.
    code, done, _ = await asyncio.to_thread(cli, "restore", "--from", str(file), "--into",
                                            target_url, "--force", "--discard-newer",
                                            url=db_url)
    assert code == 0, done
    assert await _balances(target_url) == at_backup

    # A target whose ledger did not move since (the restore above): --force alone suffices.
    code, again, _ = await asyncio.to_thread(cli, "restore", "--from", str(file), "--into",
                                             target_url, "--force", url=db_url)
    assert code == 0, again


async def test_a_backup_replaces_an_earlier_backup_and_no_other_file(
        sessions: async_sessionmaker[AsyncSession], db_url: str, tmp_path: Path,
        cli: Cli) -> None:
    await _populate(sessions)
    seed = tmp_path / "signer.json"
    seed.write_text('{"encrypted": "the only copy of the keys"}')
    log = tmp_path / "signer-audit.jsonl"
    log.write_bytes(b"")
    folder = tmp_path / "backups"
    folder.mkdir()
    code, answer, _ = await asyncio.to_thread(cli, "backup", "--to", str(folder), url=db_url)
    assert code == 1 and "is a directory" in answer["error"], answer
    assert list(folder.iterdir()) == []
    for precious in (seed, log):
        before = precious.read_bytes()
        code, answer, _ = await asyncio.to_thread(cli, "backup", "--to", str(precious),
                                                  url=db_url)
        assert code == 1 and "is not a satvault backup" in answer["error"], answer
        assert precious.read_bytes() == before
    file = tmp_path / "daily.tar"
    for _ in range(2):  # the second replaces the first
        code, answer, _ = await asyncio.to_thread(cli, "backup", "--to", str(file), url=db_url)
        assert code == 0, answer
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tar"] == ["daily.tar"]


@pytest.mark.parametrize("db_url", [b for b in BACKENDS if b == "sqlite"], indirect=True)
async def test_a_restore_into_a_file_that_is_not_a_database_is_one_clear_error(
        sessions: async_sessionmaker[AsyncSession], db_url: str, tmp_path: Path,
        cli: Cli) -> None:
    await _populate(sessions)
    file = tmp_path / "b.tar"
    code, _, _ = await asyncio.to_thread(cli, "backup", "--to", str(file), url=db_url)
    assert code == 0
    notes = tmp_path / "notes.txt"
    notes.write_bytes(os.urandom(3000))
    before = notes.read_bytes()
    for extra in ((), ("--force",)):
        code, answer, stderr = await asyncio.to_thread(
            cli, "restore", "--from", str(file), "--into", f"sqlite:///{notes}", *extra,
            url=db_url)
        assert code == 1 and "is not a SQLite database" in answer["error"], (answer, stderr)
        assert "Traceback" not in stderr
    assert notes.read_bytes() == before
