"""Running the reconciliation, and remembering what it found.

A run checks the three ways (:mod:`satvault.reconcile.checks`): the world first (node calls,
no transaction open), then the ledger and the record in one read transaction (REPEATABLE READ
on PostgreSQL, so every statement sees the same moment; SQLite's read transaction is a
snapshot already). Each difference becomes, or refreshes, an open incident (kind, subject);
an incident a run no longer sees is resolved. An incident seen on two consecutive runs is
*raised*: logged as an error and put in front of a person (a review item), once — between a
payment's arrival at a node and the worker that books it, the figures legitimately disagree
for a moment, which is why one sighting is not enough. Nothing is ever corrected here.

:class:`Reconciler` runs it on every new block (the custody worker calls it) and a deep run,
which also walks the audit chain, every ``deep_every`` runs; ``satvault reconcile`` and
``GET /api/v1/admin/reconciliation`` run it on demand, deep.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.base import ChainBackend
from satvault.backends.lightning import LightningBackend
from satvault.db import utcnow
from satvault.logs import get_logger
from satvault.onchain.models import ReviewItem
from satvault.reconcile.checks import (
    REVIEW_KIND,
    Diff,
    NodeCursor,
    ledger_way,
    records_way,
    unchecked,
    world_way,
)
from satvault.reconcile.models import ReconciliationIncident, ReconciliationRun

__all__ = ["RAISE_AFTER_RUNS", "Reconciler", "RunReport", "find_differences", "open_incidents",
           "reconcile_once"]

log = get_logger(__name__)
RAISE_AFTER_RUNS = 2


@dataclass
class RunReport:
    run_id: int
    started_at: datetime
    height: int | None
    deep: bool
    differences: list[Diff]
    raised: list[Diff] = field(default_factory=list)  # raised for a person by this run
    resolved: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        ways: dict[str, int] = {"ledger": 0, "records": 0, "world": 0}
        for d in self.differences:
            ways[d.way] += 1
        return {"ok": self.ok, "run_id": self.run_id, "at": self.started_at.isoformat(),
                "height": self.height, "deep": self.deep, "by_way": ways,
                "differences": [d.as_dict() for d in self.differences],
                "raised": [d.as_dict() for d in self.raised], "resolved": self.resolved,
                "seconds": round(self.seconds, 3)}


async def _read_books(sessions: async_sessionmaker[AsyncSession], *, deep: bool) -> list[Diff]:
    async with sessions() as s:  # read only: the transaction ends with the session
        if s.get_bind().dialect.name == "postgresql":
            await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return [*await ledger_way(s), *await records_way(s, deep=deep)]


async def _remember(session: AsyncSession, diffs: list[Diff], now: datetime, *, deep: bool
                    ) -> tuple[list[Diff], int]:
    """Open, refresh and resolve incidents; the differences raised now, and how many
    incidents went away. An incident of a kind this run did not look for (a shallow run, a
    node that could not be asked: :func:`unchecked`) stays as it is."""
    Inv = ReconciliationIncident
    open_ = {(i.kind, i.subject): i for i in (await session.execute(
        select(Inv).where(Inv.resolved_at.is_(None)).with_for_update())).scalars()}
    raised: list[Diff] = []
    seen: set[tuple[str, str]] = set()
    for d in diffs:
        key = (d.kind, d.subject[:200])
        if key in seen:
            continue
        seen.add(key)
        inc = open_.get(key)
        if inc is None:
            inc = Inv(kind=d.kind, way=d.way, subject=key[1], detail=d.detail, first_seen_at=now,
                    last_seen_at=now, seen_runs=1, raised_at=None, resolved_at=None)
            session.add(inc)
        else:
            inc.seen_runs += 1
            inc.last_seen_at, inc.detail = now, d.detail
        if inc.raised_at is None and inc.seen_runs >= RAISE_AFTER_RUNS:
            inc.raised_at = now
            raised.append(d)
            session.add(ReviewItem(kind=REVIEW_KIND, subject=f"{d.kind}:{d.subject}"[:120],
                                   details=json.dumps(d.as_dict()), created_at=now))
    skip = unchecked(diffs, deep=deep)
    gone = [i.id for k, i in open_.items() if k not in seen and not (
        (i.way == "world" and i.kind != "chain_node_unreachable") if skip is None
        else i.kind in skip)]
    if gone:
        await session.execute(update(Inv).where(Inv.id.in_(gone)).values(resolved_at=now))
    return raised, len(gone)


async def find_differences(sessions: async_sessionmaker[AsyncSession],
                           backend: ChainBackend | None, lightning: LightningBackend | None, *,
                           deep: bool = True, cursor: NodeCursor | None = None
                           ) -> tuple[list[Diff], int | None]:
    """The three ways' differences now, and the chain height, remembering nothing (what
    ``satvault doctor`` shows). ``cursor``: where the Lightning node's payments are read
    from (and moved on); none: all of them."""
    world, height = await world_way(sessions, backend, lightning, utcnow(), cursor)
    return [*await _read_books(sessions, deep=deep), *world], height


async def reconcile_once(sessions: async_sessionmaker[AsyncSession],
                         backend: ChainBackend | None, lightning: LightningBackend | None, *,
                         deep: bool = True, cursor: NodeCursor | None = None) -> RunReport:
    """One run of the three ways, remembered (see the module docstring)."""
    started, clock = utcnow(), time.perf_counter()
    diffs, height = await find_differences(sessions, backend, lightning, deep=deep,
                                           cursor=cursor)
    async with sessions() as s, s.begin():
        raised, resolved = await _remember(s, diffs, utcnow(), deep=deep)
        report = RunReport(0, started, height, deep, diffs, raised, resolved,
                           time.perf_counter() - clock)
        run = ReconciliationRun(started_at=started, finished_at=utcnow(), height=height,
                                differences=len(diffs), report="")
        s.add(run)
        await s.flush()
        report.run_id = run.id
        run.report = json.dumps(report.as_dict(), sort_keys=True)
    for d in raised:
        log.error("reconciliation_difference", way=d.way, kind=d.kind, subject=d.subject,
                  detail=d.detail)
    log.info("reconciliation_run", run=report.run_id, height=height, deep=deep,
             differences=len(diffs), raised=len(raised), resolved=resolved,
             seconds=round(report.seconds, 3))
    return report


async def open_incidents(session: AsyncSession) -> list[dict[str, Any]]:
    Inv = ReconciliationIncident
    rows = (await session.execute(select(Inv).where(Inv.resolved_at.is_(None))
                                  .order_by(Inv.id))).scalars().all()
    return [{"id": i.id, "way": i.way, "kind": i.kind, "subject": i.subject,
             "detail": i.detail, "first_seen_at": i.first_seen_at.isoformat(),
             "last_seen_at": i.last_seen_at.isoformat(), "seen_runs": i.seen_runs,
             "raised_at": i.raised_at.isoformat() if i.raised_at else None} for i in rows]


class Reconciler:
    """Runs the reconciliation once per new block; deep every ``deep_every`` runs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: ChainBackend,
                 lightning: LightningBackend | None = None, *, deep_every: int = 144) -> None:
        self.sessions = sessions
        self.backend = backend
        self.lightning = lightning
        self.deep_every = max(1, deep_every)
        self._last_height: int | None = None
        self._runs = 0
        # The node's payments: from where the last run left them; a deep run (the first of
        # a process among them: after a restore, say) reads them all again.
        self._payments = NodeCursor()

    async def step(self, *, force: bool = False) -> list[Diff]:
        """The differences this run raised for a person (empty if the tip did not move)."""
        tip = (await self.backend.tip()).height
        if tip == self._last_height and not force:
            return []
        deep = self._runs % self.deep_every == 0
        if deep:
            self._payments = NodeCursor()
        report = await reconcile_once(self.sessions, self.backend, self.lightning, deep=deep,
                                      cursor=self._payments)
        self._last_height, self._runs = tip, self._runs + 1
        return report.raised
