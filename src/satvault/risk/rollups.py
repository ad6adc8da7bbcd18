"""The screening's outgoing roll-ups (PostgreSQL, migration 0039): whether they say what the
withdrawals say, and rebuilding them from the withdrawals when not.

A trigger keeps them in the transaction of every change to ``withdrawals``, so they can only
drift from the rows where the trigger did not run: a data-only restore or a replica applying
rows with triggers off (``session_replication_role = replica``), or a hand-made change with
triggers disabled. :func:`rollup_drift` compares, per wallet and bucket size, the last
:data:`HORIZON_DAYS` days (what the screening's windows can still read: counts, sums,
distinct destinations) in one statement, one snapshot; it is part of a deep
reconciliation and of ``satvault risk rollups check``.
:func:`rebuild_rollups` recomputes one wallet's (or every wallet's) from its rows, under the
lock every writer of that wallet's roll-ups takes. SQLite keeps no roll-ups (its screening
reads the rows), so there both are no-ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["HORIZON_DAYS", "RollupDrift", "keeps_rollups", "rebuild_rollups", "rollup_drift"]

HORIZON_DAYS = 31

_SPANS = {60: "minute", 3600: "hour", 86400: "day"}

_DRIFT = text("""
WITH live AS (
    SELECT wallet_id, count(*) AS n, coalesce(sum(amount_msat), 0) AS total,
           count(DISTINCT destination) AS parties
      FROM withdrawals
     WHERE created_at >= to_timestamp(:cut) AND status NOT IN ('failed', 'cancelled')
     GROUP BY wallet_id),
kept AS (
    SELECT wallet_id, span,
           coalesce(sum(n) FILTER (WHERE kind = 'out'), 0) AS n,
           coalesce(sum(total) FILTER (WHERE kind = 'out'), 0) AS total,
           coalesce(sum(n) FILTER (WHERE kind = 'party'), 0) AS parties
      FROM risk_rollups WHERE start >= :cut GROUP BY wallet_id, span),
latest AS (
    SELECT wallet_id, count(*) AS parties FROM risk_last_paid
     WHERE last_at >= to_timestamp(:cut) GROUP BY wallet_id),
wallets AS (
    SELECT wallet_id FROM live UNION SELECT wallet_id FROM kept
    UNION SELECT wallet_id FROM latest)
SELECT w.wallet_id, s.span,
       coalesce(l.n, 0), coalesce(l.total, 0), coalesce(l.parties, 0),
       coalesce(k.n, 0), coalesce(k.total, 0), coalesce(k.parties, 0), coalesce(t.parties, 0)
  FROM wallets w CROSS JOIN (VALUES (60), (3600), (86400)) AS s(span)
  LEFT JOIN live l ON l.wallet_id = w.wallet_id
  LEFT JOIN kept k ON k.wallet_id = w.wallet_id AND k.span = s.span
  LEFT JOIN latest t ON t.wallet_id = w.wallet_id
 WHERE coalesce(l.n, 0) <> coalesce(k.n, 0) OR coalesce(l.total, 0) <> coalesce(k.total, 0)
    OR coalesce(l.parties, 0) <> coalesce(k.parties, 0)
    OR coalesce(l.parties, 0) <> coalesce(t.parties, 0)
 ORDER BY w.wallet_id, s.span
 LIMIT :limit
""")


@dataclass(frozen=True, slots=True)
class RollupDrift:
    """One wallet's roll-ups of one bucket size, apart from its rows since ``since``."""

    wallet_id: str
    span: str  # minute | hour | day
    since: datetime
    rows: tuple[int, int, int]  # live withdrawals, their msat, their destinations
    kept: tuple[int, int, int]  # the same from the roll-ups
    latest: int  # destinations whose latest live withdrawal is since then (risk_last_paid)

    @property
    def detail(self) -> str:
        n, total, parties = self.rows
        kn, ktotal, kparties = self.kept
        return (f"since {self.since:%Y-%m-%d}, per {self.span}: the withdrawals say {n} "
                f"payments of {total} msat to {parties} destinations; the roll-ups {kn} of "
                f"{ktotal} msat to {kparties} (latest-payment rows: {self.latest})")


async def keeps_rollups(session: AsyncSession) -> bool:
    """PostgreSQL keeps roll-ups; SQLite reads the rows."""
    return (await session.connection()).dialect.name == "postgresql"


async def rollup_drift(session: AsyncSession, *, now: datetime, limit: int = 200
                       ) -> list[RollupDrift]:
    """Every wallet and bucket size whose roll-ups of the last :data:`HORIZON_DAYS` days (from
    a day's start) disagree with its live withdrawals: counts, sums, distinct destinations.
    Empty when they agree, and on SQLite."""
    if not await keeps_rollups(session):
        return []
    cut = math.floor((now - timedelta(days=HORIZON_DAYS)).timestamp() / 86400) * 86400
    since = datetime.fromtimestamp(cut, tz=now.tzinfo)
    rows = await session.execute(_DRIFT, {"cut": cut, "limit": limit})
    return [RollupDrift(r[0], _SPANS[r[1]], since, (int(r[2]), int(r[3]), int(r[4])),
                        (int(r[5]), int(r[6]), int(r[7])), int(r[8])) for r in rows]


async def rebuild_rollups(session: AsyncSession, wallet_id: str | None) -> None:
    """Recompute ``wallet_id``'s roll-ups (every wallet's with None: their tables locked
    against writers meanwhile) from its withdrawals, in the session's transaction."""
    if await keeps_rollups(session):
        await session.execute(text("SELECT risk_rollups_rebuild(:wallet)"),
                              {"wallet": wallet_id})
