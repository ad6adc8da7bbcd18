"""The restore drill: back up under load, restore into a fresh database, and prove nothing
acknowledged before the backup began was lost.

Writers book ledger transfers and two-phase holds (a hold, then its post or void: the
bookings an internal payment makes) between funded wallets, concurrently, in tasks of this
event loop. An operation counts as acknowledged once ``submit`` returned it committed. The
backup starts while writes are on their way to a commit, and the writers keep running until
it has finished and a little past. The restore goes
through the ``satvault restore`` command into a database that did not exist; then ``satvault
ledger check`` and ``satvault audit verify`` must be clean, every operation acknowledged
before the backup began must be there, nothing that was never acknowledged may be, and the
wallets must still hold exactly what was paid in.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backup import backup
from satvault.db import create_engine
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.store import submit
from tests.backup.conftest import Cli
from tests.factories import books

WALLETS, FUND, WRITERS = 8, 10_000_000, 4


class Workload:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], wallets: list[int]) -> None:
        self.sessions, self.wallets = sessions, wallets
        self.backup_began = False
        self.stop = asyncio.Event()
        self.before: set[str] = set()  # acknowledged before the backup began
        self.after: set[str] = set()  # acknowledged once it had begun
        self.refused = 0
        self.inflight = 0  # submits sent and not yet answered

    def _ack(self, transfer_id: str) -> None:
        (self.after if self.backup_began else self.before).add(transfer_id)

    async def _one(self, specs: list[TransferSpec]) -> bool:
        self.inflight += 1
        try:
            (outcome,) = await submit(self.sessions, specs)
        finally:
            self.inflight -= 1
        if outcome.ok:
            self._ack(specs[0].id)
        else:
            self.refused += 1
        return outcome.ok

    async def writer(self, n: int) -> None:
        rng = random.Random(n)
        i = 0
        while not self.stop.is_set():
            i += 1
            a, b = rng.sample(self.wallets, 2)
            amount = rng.randint(1, 5_000)
            tid = f"drill:{n}:{i}"
            if i % 3:
                await self._one([TransferSpec(id=tid, debit_account_id=a, credit_account_id=b,
                                              amount=amount, asset="BTC", code="internal")])
                continue
            pending = TransferSpec(id=f"{tid}:hold", debit_account_id=a, credit_account_id=b,
                                   amount=amount, asset="BTC", kind=TransferKind.PENDING,
                                   code="internal")
            if await self._one([pending]):
                kind = TransferKind.VOID if i % 2 else TransferKind.POST
                await self._one([TransferSpec(id=f"{tid}:{kind.value}", kind=kind,
                                              pending_id=pending.id)])

    async def until(self, count: int) -> None:
        while len(self.before) < count:
            await asyncio.sleep(0.01)


async def _restored(url: str) -> tuple[set[str], int]:
    """The restored transfer ids and the wallets' total posted balance."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            ids = set((await conn.execute(text("SELECT id FROM ledger_transfers"))).scalars())
            total = (await conn.execute(text(
                "SELECT COALESCE(SUM(credits_posted - debits_posted), 0) FROM ledger_accounts "
                "WHERE name LIKE 'test:wallet:%'"))).scalar_one()
            return ids, int(total)
    finally:
        await engine.dispose()


async def test_backup_under_load_restores_everything_acknowledged_before_it(
        sessions: async_sessionmaker[AsyncSession], db_url: str, target_url: str,
        tmp_path: Path, cli: Cli) -> None:
    made = await books(sessions, wallets=WALLETS, fund=FUND)
    async with sessions() as s:
        funded = set((await s.execute(text(
            "SELECT id FROM ledger_transfers WHERE code = 'deposit'"))).scalars())
    load = Workload(sessions, [w.id for w in made.wallets])
    writers = [asyncio.create_task(load.writer(n)) for n in range(WRITERS)]
    try:
        await load.until(200)
        while load.inflight < 2:  # start while commits are on their way, racing the copy
            await asyncio.sleep(0)
        racing = load.inflight
        load.backup_began = True  # from here on an acknowledgement counts as "after"
        result = await backup(db_url, tmp_path / "drill.tar")
        during = len(load.after)
        # keep writing a little past the backup: those may not be in it, and must not matter
        while len(load.after) < during + 20:
            await asyncio.sleep(0.01)
    finally:
        load.stop.set()
        await asyncio.gather(*writers)
    assert racing >= 2 and len(load.after) >= 20
    assert result.manifest.revision and result.manifest.dump.bytes > 0

    code, body, stderr = await asyncio.to_thread(
        cli, "restore", "--from", str(result.path), "--into", target_url, url=db_url)
    assert code == 0, (body, stderr)
    assert body["ok"] and body["up_to_date"] and body["revision"] == result.manifest.revision

    code, report, _ = await asyncio.to_thread(cli, "ledger", "check", url=target_url)
    assert code == 0 and report["ok"] and report["problems"] == [], report
    code, audit, _ = await asyncio.to_thread(cli, "audit", "verify", url=target_url)
    assert code == 0 and audit["ok"] and audit["broken"] is None, audit

    restored, wallet_total = await _restored(target_url)
    lost = load.before - restored
    assert not lost, f"{len(lost)} acknowledged operations were lost, e.g. {sorted(lost)[:5]}"
    assert funded <= restored
    # nothing invented: every restored row was acknowledged to a writer at some point
    assert restored - funded - load.before - load.after == set()
    # money neither appeared nor vanished: the wallets' posted balances add up to what was
    # paid in (open holds sit in the pending columns, which the ledger check balanced)
    assert wallet_total == WALLETS * FUND
    # and the live database, which kept going, still checks out too
    code, live, _ = await asyncio.to_thread(cli, "ledger", "check", url=db_url)
    assert code == 0 and live["ok"], live
