"""The roll-ups the risk screening's windows and the withdrawal limits' sums read (PostgreSQL,
migrations 0039 and 0040): whether they say what the withdrawals and the credits say, and
rebuilding them from the rows when not.

A trigger keeps them in the transaction of every change to ``withdrawals``, so they can only
drift from the rows where the trigger did not run: a data-only restore or a replica applying
rows with triggers off (``session_replication_role = replica``), or a hand-made change with
triggers disabled. :func:`rollup_drift` compares, per wallet, kind and bucket size, the last
:data:`HORIZON_DAYS` days (what the windows can still read: counts, sums on all rails and per
rail, distinct destinations) in one statement, one snapshot; it is part of a deep
reconciliation and of ``satvault risk rollups check``. Money in is folded by the screening
itself (kind ``in``: a wallet's credits up to its account's mark, folded at its next
screening); it drifts only where credits were written below the mark without the ledger
(which locks the account first) or the roll-ups were changed by hand. :func:`prune_rollups`
deletes what no window can read any more (``satvault risk rollups prune``, daily).
:func:`rebuild_rollups` recomputes one wallet's from its rows, under the locks every writer
of that wallet's roll-ups takes. SQLite keeps no roll-ups (its screening
reads the rows), so there these are no-ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["HORIZON_DAYS", "KEEP_DAYS", "RollupDrift", "keeps_rollups", "prune_rollups",
           "rebuild_rollups", "rollup_drift"]

HORIZON_DAYS = 31
# Buckets older than this are never read (windows reach 30 days back, the check 31 from a
# day's start) and go at the next prune.
KEEP_DAYS = 33

_SPANS = {60: "minute", 3600: "hour", 86400: "day"}

_DRIFT = text("""
WITH live AS (
    SELECT wallet_id, method, destination, amount_msat FROM withdrawals
     WHERE created_at >= to_timestamp(:cut) AND status NOT IN ('failed', 'cancelled')),
expected AS (
    SELECT wallet_id, 'out' AS kind, count(*) AS n, sum(amount_msat) AS total
      FROM live GROUP BY wallet_id
    UNION ALL
    SELECT wallet_id, 'rail:' || method, count(*), sum(amount_msat)
      FROM live GROUP BY wallet_id, method
    UNION ALL
    SELECT wallet_id, 'party', count(DISTINCT destination), 0 FROM live GROUP BY wallet_id
    UNION ALL  -- destinations by their latest live withdrawal (risk_last_paid), as 'party'
    SELECT wallet_id, 'latest', count(DISTINCT destination), 0 FROM live GROUP BY wallet_id
    UNION ALL  -- money in: the credits folded so far (up to the account's mark)
    SELECT w.id, 'in', count(*), sum(t.amount)
      FROM wallets w
      JOIN risk_in_marks k ON k.account_id = w.ledger_account_id
      JOIN ledger_transfers t ON t.credit_account_id = k.account_id AND t.seq <= k.seq
     WHERE t.kind IN ('single', 'post') AND t.created_at >= to_timestamp(:cut)
     GROUP BY w.id),
kept AS (
    SELECT wallet_id, kind, span, sum(n) AS n, sum(total) AS total
      FROM risk_rollups WHERE start >= :cut GROUP BY wallet_id, kind, span
    UNION ALL
    SELECT wallet_id, 'latest', s.span, count(*), 0
      FROM risk_last_paid, (VALUES (60), (3600), (86400)) AS s(span)
     WHERE last_at >= to_timestamp(:cut) GROUP BY wallet_id, s.span
    UNION ALL
    SELECT w.id, 'in', r.span, sum(r.n), sum(r.total)
      FROM wallets w JOIN risk_in_rollups r ON r.account_id = w.ledger_account_id
     WHERE r.start >= :cut GROUP BY w.id, r.span),
want AS (
    SELECT e.wallet_id, e.kind, s.span, e.n, e.total
      FROM expected e, (VALUES (60), (3600), (86400)) AS s(span))
SELECT coalesce(w.wallet_id, k.wallet_id), coalesce(w.kind, k.kind), coalesce(w.span, k.span),
       coalesce(w.n, 0), coalesce(w.total, 0), coalesce(k.n, 0), coalesce(k.total, 0)
  FROM want w FULL JOIN kept k
    ON k.wallet_id = w.wallet_id AND k.kind = w.kind AND k.span = w.span
 WHERE coalesce(w.n, 0) <> coalesce(k.n, 0) OR coalesce(w.total, 0) <> coalesce(k.total, 0)
 ORDER BY 1, 2, 3
 LIMIT :limit
""")


@dataclass(frozen=True, slots=True)
class RollupDrift:
    """One wallet's roll-up of one kind and bucket size, apart from its rows since ``since``.
    ``kind``: ``out`` (live withdrawals), ``rail:<method>`` (those of one rail), ``party``
    (destinations by their latest one), ``latest`` (the destinations' latest-payment rows) or
    ``in`` (the credits folded into the wallet's account's roll-ups)."""

    wallet_id: str
    kind: str
    span: str  # minute | hour | day
    since: datetime
    rows: tuple[int, int]  # count and msat the withdrawals give
    kept: tuple[int, int]  # the same from the roll-ups

    @property
    def detail(self) -> str:
        rows = "the credits" if self.kind == "in" else "the withdrawals"
        return (f"since {self.since:%Y-%m-%d}, {self.kind} per {self.span}: {rows} "
                f"say {self.rows[0]} of {self.rows[1]} msat, the roll-ups {self.kept[0]} of "
                f"{self.kept[1]} msat")


async def keeps_rollups(session: AsyncSession) -> bool:
    """PostgreSQL keeps roll-ups; SQLite reads the rows."""
    return (await session.connection()).dialect.name == "postgresql"


async def rollup_drift(session: AsyncSession, *, now: datetime, limit: int = 200
                       ) -> list[RollupDrift]:
    """Every wallet, kind and bucket size whose roll-ups of the last :data:`HORIZON_DAYS` days
    (from a day's start) disagree with its live withdrawals: counts, sums (all rails and per
    rail), distinct destinations. Empty when they agree, and on SQLite."""
    if not await keeps_rollups(session):
        return []
    cut = math.floor((now - timedelta(days=HORIZON_DAYS)).timestamp() / 86400) * 86400
    since = datetime.fromtimestamp(cut, tz=now.tzinfo)
    rows = await session.execute(_DRIFT, {"cut": cut, "limit": limit})
    return [RollupDrift(r[0], r[1], _SPANS[r[2]], since, (int(r[3]), int(r[4])),
                        (int(r[5]), int(r[6]))) for r in rows]


async def rebuild_rollups(session: AsyncSession, wallet_id: str) -> None:
    """Recompute ``wallet_id``'s roll-ups from its account's credits and its withdrawals, in
    the session's transaction. Money in first, then money out: the order a payment takes
    their locks in (its screening folds money in, then its withdrawal's trigger moves money
    out), so a rebuild beside the wallet's payments waits for them instead of deadlocking.
    (Every wallet is one such transaction after the other: ``satvault risk rollups rebuild
    --all``. The functions' whole-table form, which locks the tables, is the migrations'
    backfill only: a table lock taken beside payments, which take the tables' locks in
    different orders on different paths, could deadlock with one of them.)"""
    if not await keeps_rollups(session):
        return
    account = (await session.execute(text(
        "SELECT ledger_account_id FROM wallets WHERE id = :w"), {"w": wallet_id})
    ).scalar_one_or_none()
    if account is None:
        return
    await session.execute(text(  # the band it has, kept
        "SELECT risk_in_rebuild(:a, (SELECT band_low FROM risk_in_marks WHERE account_id = "
        ":a), (SELECT band_top FROM risk_in_marks WHERE account_id = :a))"), {"a": account})
    await session.execute(text("SELECT risk_rollups_rebuild(:wallet)"), {"wallet": wallet_id})


_PRUNE = [
    ("out", text("DELETE FROM risk_rollups WHERE start < :cut")),
    ("in", text("DELETE FROM risk_in_rollups WHERE start < :cut")),
    # a destination last paid before the cut has no bucket left to move out of
    ("latest", text("DELETE FROM risk_last_paid WHERE last_at < to_timestamp(:cut)")),
]


async def prune_rollups(session: AsyncSession, *, now: datetime,
                        keep_days: int = KEEP_DAYS) -> dict[str, int]:
    """Delete the buckets (and destinations' latest payments) older than ``keep_days`` from a
    day's start, in the session's transaction; how many rows of each went. A withdrawal of
    before the cut that fails later finds no bucket to leave: a warning, nothing below zero
    (as for any withdrawal the roll-ups do not hold). Nothing on SQLite."""
    if not await keeps_rollups(session):
        return {}
    if keep_days <= HORIZON_DAYS:
        raise ValueError(f"keep_days must exceed the {HORIZON_DAYS} days the check reads")
    cut = math.floor((now - timedelta(days=keep_days)).timestamp() / 86400) * 86400
    out = {}
    for kind, stmt in _PRUNE:
        result = await session.execute(stmt, {"cut": cut})
        out[kind] = int(result.rowcount)  # type: ignore[attr-defined]
    return out
