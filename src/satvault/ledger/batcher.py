"""Group commit: many concurrent callers' transfers share one database transaction.

Each :meth:`LedgerBatcher.submit` call waits for its own outcomes exactly as
:func:`satvault.ledger.store.submit` would give them: the callers' batches are concatenated,
and since a caller's last transfer never carries ``linked``, chains never span two callers —
one caller's refused transfer cannot touch another's. Same ids from two callers in one round
behave as if submitted one after the other (the second sees ``exists``). What changes is the
cost: one lock round, one insert, one balance update and one commit serve every caller waiting
at that moment, which is how TigerBeetle reaches its throughput and how the ledger here gets
past the one-commit-per-transfer ceiling.

If a shared round fails as a whole (a bug, a broken connection), each caller's batch is retried
on its own, so a failure is reported to the caller whose transfers caused it.

Where it fits. Only callers whose transfers are a unit of work *by themselves* (they would call
:func:`~satvault.ledger.store.submit`) can share a commit: a money path that writes its own
rows (an invoice marked paid, a payment, a payout, a deposit) books its transfers with
``create_transfers``/``transfer`` inside its own transaction, and must, so that both commit or
neither. Today every production money path is of that kind; ``submit`` has no production
caller. :func:`ledger_writer` is the entry for future ones (an internal ledger API, imports,
fee sweeps): with ``group_commit`` it hands out a shared :class:`LedgerBatcher`, without it a
plain ``submit``; the outcomes are the same either way. (No setting switches it: a switch
nothing in production reads would only mislead an operator.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.ledger.core import Outcome, TransferSpec
from satvault.ledger.store import submit

__all__ = ["LedgerBatcher", "LedgerWriter", "ledger_writer"]


class LedgerWriter(Protocol):
    """Submits a batch in a transaction of its own (alone or shared) and returns its outcomes,
    one per spec, in order, exactly as :func:`~satvault.ledger.store.submit` would."""

    async def submit(self, specs: Sequence[TransferSpec], *, now: datetime | None = None
                     ) -> list[Outcome]: ...


class _SoloWriter:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def submit(self, specs: Sequence[TransferSpec], *, now: datetime | None = None
                     ) -> list[Outcome]:
        return await submit(self.sessions, specs, now=now)


def ledger_writer(sessions: async_sessionmaker[AsyncSession], *, group_commit: bool
                  ) -> LedgerWriter:
    """The writer for callers whose transfers stand alone: group-committed through one
    :class:`LedgerBatcher` when ``group_commit``, else a
    transaction per call. Build it once per process and share it."""
    return LedgerBatcher(sessions) if group_commit else _SoloWriter(sessions)


class LedgerBatcher:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *,
                 max_transfers: int = 2000) -> None:
        self.sessions = sessions
        self.max_transfers = max_transfers
        self._queue: list[tuple[list[TransferSpec], asyncio.Future[list[Outcome]]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.rounds = 0

    async def submit(self, specs: Sequence[TransferSpec], *, now: datetime | None = None
                     ) -> list[Outcome]:
        batch = list(specs)
        if not batch:
            return []
        if batch[-1].linked or now is not None:
            return await submit(self.sessions, batch, now=now)  # an open chain stays alone
        fut: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.append((batch, fut))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await fut

    def _take(self) -> list[tuple[list[TransferSpec], asyncio.Future[list[Outcome]]]]:
        taken: list[tuple[list[TransferSpec], asyncio.Future[list[Outcome]]]] = []
        count = 0
        while self._queue and (not taken or count + len(self._queue[0][0])
                               <= self.max_transfers):
            item = self._queue.pop(0)
            taken.append(item)
            count += len(item[0])
        return taken

    async def _run(self) -> None:
        while self._queue:
            # Let every caller that is ready join this round before it starts.
            await asyncio.sleep(0)
            round_ = self._take()
            self.rounds += 1
            flat = [s for specs, _ in round_ for s in specs]
            try:
                outcomes = await submit(self.sessions, flat)
            except Exception:
                for specs, fut in round_:
                    try:
                        fut.set_result(await submit(self.sessions, specs))
                    except Exception as exc:
                        fut.set_exception(exc)
                continue
            start = 0
            for specs, fut in round_:
                mine = outcomes[start:start + len(specs)]
                fut.set_result([replace(o, index=o.index - start) for o in mine])
                start += len(specs)
