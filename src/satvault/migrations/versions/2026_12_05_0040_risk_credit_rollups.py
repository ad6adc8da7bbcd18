"""a wallet's money in read from roll-ups folded at screening time, exact and bounded
whatever its history (issue 10)

Every screening (a withdrawal's, and a deposit's: each Lightning payment into a wallet and
each internal payment is screened under the receiving wallet's row lock) read the wallet's
ledger credits of the last 30 days for the four windows' count, sum and sum of squares, the
structuring band and the rapid-movement sum: an index-only scan of the month's credits,
~25 ms for a store with 30,000 payments a month, on every payment into it. Migration 0039
bounded the outgoing side with roll-ups kept by a trigger on ``withdrawals``; the same
trigger on ``ledger_transfers`` cost every movement of money 21-28% of the ledger's rate, so
money in is folded instead, by the screening itself, only for wallets that are screened:

* ``risk_in_marks``: per ledger account, the highest ``seq`` of its credits folded so far;
* ``risk_in_rollups``: per account and UTC minute, hour and day the count, sum and sum of
  squares (exact numerics) of the folded credits (transfers of kind ``single`` or ``post``).

``risk_in_fold(account)`` takes the account's transaction-level advisory lock and folds, in
one statement, its credits with a ``seq`` above the mark into the buckets of their
``created_at`` and moves the mark (its credits after the mark are one range of
``ix_ledger_transfers_credit``, rebuilt here to include the columns read: an index-only
scan). Folding by ``seq`` is exact because every writer of a credit to an account holds
that account's row lock (``FOR NO KEY UPDATE``: the ledger locks both accounts, then
inserts, and a sequence value is drawn at the insert) until it commits:
the credits of one account are drawn and committed in one order, so those a snapshot sees
are all of those with a ``seq`` up to the highest it sees. None can later appear below the
mark. Credits are append-only (a trigger refuses UPDATE and DELETE), so nothing is taken out.

The screening function folds first (every call: the withdrawal and deposit paths hold the
wallet's lock then; a second read in the same transaction finds nothing new), then reads
each window ``[since, now]`` as: the buckets of whole minutes, hours and days from the next
minute on (``risk_rollup_window``'s shape), and the folded credits of the partial first
minute from the rows (only when that minute's bucket holds any). Its money in is thus as of
the fold: a credit committed after it is read by the next screening, as one committed after
a read of the rows would have been. The structuring band's count comes from the buckets
too: each holds how many of its credits fall in the band it was folded with, kept in the
mark; when the live rule set moves the band, the next fold rebuilds that account's buckets
from its credits once. (An index on the credits' amounts would have served it without that,
at ~4-6 µs of database time more per transfer in the ledger's batches: measured.) Roll-ups
are kept for wallets' accounts only (the backfill takes the last 32 days of credits to
accounts a wallet has); an account never screened keeps no rows at all.

SQLite keeps the one row-by-row statement (``satvault.risk.features._query``), which the tests
compare the function with. ``satvault risk rollups check`` and a deep reconciliation compare
the credit roll-ups with the folded rows too (kind ``in``); ``rebuild`` recomputes them.

Revision ID: 0040_risk_credit_rollups
Revises: 0039_risk_rollups
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from typing import Any

from alembic import op

from satvault.migrations.siblings import load

revision: str = "0040_risk_credit_rollups"
down_revision: str | None = "0039_risk_rollups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WINDOWS = ("1h", "24h", "7d", "30d")
_CREDIT = "('single', 'post')"  # the kinds that add to an account's posted credits

_TABLES = """
CREATE TABLE risk_in_marks (
    account_id bigint PRIMARY KEY,
    seq bigint NOT NULL,
    -- the structuring band the buckets' band counts were folded with (NULL: none yet)
    band_low numeric,
    band_top numeric
);
CREATE TABLE risk_in_rollups (
    account_id bigint NOT NULL,
    span integer NOT NULL CHECK (span IN (60, 3600, 86400)),
    start bigint NOT NULL,
    n bigint NOT NULL,
    total numeric NOT NULL,
    sq numeric NOT NULL,
    band bigint NOT NULL,
    PRIMARY KEY (account_id, span, start),
    CONSTRAINT ck_risk_in_rollups_not_negative
        CHECK (n >= 0 AND total >= 0 AND sq >= 0 AND band >= 0 AND band <= n)
);
CREATE INDEX ix_ledger_transfers_credit_cover
    ON ledger_transfers (credit_account_id, seq) INCLUDE (created_at, amount, kind);
DROP INDEX ix_ledger_transfers_credit;
ALTER INDEX ix_ledger_transfers_credit_cover RENAME TO ix_ledger_transfers_credit;
"""

_FUNCTIONS = f"""
-- Fold the account's credits drawn after its mark into its buckets, with how many of them
-- fall in the structuring band [p_low, p_top), and move the mark: one statement (one
-- snapshot), under the account's fold lock. Buckets folded with another band (the live rule
-- set changed it) are rebuilt from the credits first, once. Its plans are generic from the
-- first call (PL/pgSQL kept planning the fold afresh for each account: 0.27 against 0.08 ms
-- of server time per call with nothing to fold, measured; the plan is the index-only range).
CREATE FUNCTION risk_in_fold(p_account bigint, p_low numeric, p_top numeric) RETURNS void
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(40, hashtext(p_account::text));
    IF EXISTS (SELECT 1 FROM risk_in_marks k WHERE k.account_id = p_account
                  AND (k.band_low IS DISTINCT FROM p_low OR k.band_top IS DISTINCT FROM p_top))
    THEN
        PERFORM risk_in_rebuild(p_account, p_low, p_top);
    END IF;
    -- The credits drawn after the mark: one range of ix_ledger_transfers_credit
    -- (credit_account_id, seq), which carries the columns read (INCLUDE), so an index-only
    -- scan of it is the plan, in the generic plan too. Measured before that: written as
    -- credit_account_id = p AND seq > mark the plan walked the primary key from the mark
    -- (every account's transfers since), and with row comparisons alone an index led by
    -- the account (one on the credits' amounts, tried for the band and not kept) and a
    -- sort: 2.5-6 ms per fold.
    WITH fresh AS MATERIALIZED (
        SELECT t.seq, t.kind, t.created_at, t.amount FROM ledger_transfers t
         WHERE (t.credit_account_id, t.seq) > (p_account, coalesce(
                   (SELECT k.seq FROM risk_in_marks k WHERE k.account_id = p_account), 0))
           AND (t.credit_account_id, t.seq) < (p_account + 1, 0)
         ORDER BY t.credit_account_id, t.seq
    ), put AS (
        INSERT INTO risk_in_rollups AS r (account_id, span, start, n, total, sq, band)
        SELECT p_account, s.span,
               (floor(extract(epoch FROM f.created_at) / s.span) * s.span)::bigint,
               count(*), sum(f.amount), sum(f.amount * f.amount),
               count(*) FILTER (WHERE f.amount >= p_low AND f.amount < p_top)
          FROM fresh f, (VALUES (60), (3600), (86400)) AS s(span)
         WHERE f.kind IN {_CREDIT}
         GROUP BY 2, 3
         ORDER BY 2, 3
        ON CONFLICT (account_id, span, start) DO UPDATE
           SET n = r.n + excluded.n, total = r.total + excluded.total,
               sq = r.sq + excluded.sq, band = r.band + excluded.band
    )
    INSERT INTO risk_in_marks AS k (account_id, seq, band_low, band_top)
    SELECT p_account, max(f.seq), p_low, p_top FROM fresh f HAVING count(*) > 0
    ON CONFLICT (account_id) DO UPDATE SET seq = excluded.seq;
END
$fn$;

-- One window of the account's folded credits (``seq`` up to p_mark): count, sum, sum of
-- squares and how many in the band [p_low, p_top) (the band they were folded with), exact.
-- Whole minutes, hours and days from the buckets; the partial first minute from the rows
-- (those up to the mark: one reading, one snapshot of the fold).
CREATE FUNCTION risk_in_window(p_account bigint, p_since timestamptz, p_mark bigint,
                               p_low numeric, p_top numeric)
RETURNS TABLE (n numeric, total numeric, sq numeric, band numeric)
LANGUAGE sql STABLE AS $fn$
    SELECT r.n + e.n, r.total + e.total, r.sq + e.sq, r.band + e.band
      FROM (SELECT (ceil(extract(epoch FROM p_since) / 60) * 60)::bigint AS m,
                   (ceil(extract(epoch FROM p_since) / 3600) * 3600)::bigint AS h,
                   (ceil(extract(epoch FROM p_since) / 86400) * 86400)::bigint AS d) AS b,
           LATERAL (
            SELECT coalesce(sum(x.n), 0) AS n, coalesce(sum(x.total), 0) AS total,
                   coalesce(sum(x.sq), 0) AS sq, coalesce(sum(x.band), 0) AS band
              FROM (SELECT y.n, y.total, y.sq, y.band FROM risk_in_rollups y
                     WHERE y.account_id = p_account AND y.span = 60
                       AND y.start >= b.m AND y.start < b.h
                    UNION ALL
                    SELECT y.n, y.total, y.sq, y.band FROM risk_in_rollups y
                     WHERE y.account_id = p_account AND y.span = 3600
                       AND y.start >= b.h AND y.start < b.d
                    UNION ALL
                    SELECT y.n, y.total, y.sq, y.band FROM risk_in_rollups y
                     WHERE y.account_id = p_account AND y.span = 86400
                       AND y.start >= b.d) AS x) AS r,
           LATERAL (
            SELECT count(*) AS n, coalesce(sum(t.amount), 0) AS total,
                   coalesce(sum(t.amount * t.amount), 0) AS sq,
                   count(*) FILTER (WHERE t.amount >= p_low AND t.amount < p_top) AS band
              FROM ledger_transfers t
             WHERE t.credit_account_id = p_account AND t.kind IN {_CREDIT}
               AND t.created_at >= p_since AND t.created_at < to_timestamp(b.m)
               AND t.seq + 0 <= p_mark  -- a filter on the minute's rows, not an index range
               -- Only if that minute holds any (a one-time test: most edges are empty).
               AND EXISTS (SELECT 1 FROM risk_in_rollups g
                            WHERE g.account_id = p_account AND g.span = 60
                              AND g.start = (floor(extract(epoch FROM p_since) / 60)
                                             * 60)::bigint
                              AND g.n > 0)) AS e
$fn$;
"""

# Rebuilding from the rows: the backfill here, and what an operator runs when a check finds the
# roll-ups and the rows apart.
_REBUILD = f"""
-- One account's credit roll-ups (or, with NULL, those of every wallet's account) rebuilt from
-- its credits of the last 32 days (older buckets are never read), the mark set to its latest
-- credit, the band counted for [p_low, p_top) (NULL: none, counted at the next fold): under
-- the account's fold lock (the tables', for all).
CREATE FUNCTION risk_in_rebuild(p_account bigint, p_low numeric, p_top numeric) RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF p_account IS NULL THEN
        LOCK TABLE risk_in_rollups, risk_in_marks IN EXCLUSIVE MODE;
    ELSE
        PERFORM pg_advisory_xact_lock(40, hashtext(p_account::text));
    END IF;
    DELETE FROM risk_in_rollups r WHERE p_account IS NULL OR r.account_id = p_account;
    DELETE FROM risk_in_marks k WHERE p_account IS NULL OR k.account_id = p_account;
    WITH accounts AS (
        SELECT DISTINCT w.ledger_account_id AS id FROM wallets w
         WHERE p_account IS NULL OR w.ledger_account_id = p_account
    ), marks AS (
        INSERT INTO risk_in_marks (account_id, seq, band_low, band_top)
        SELECT a.id, m.seq, p_low, p_top FROM accounts a,
               LATERAL (SELECT max(t.seq) AS seq FROM ledger_transfers t
                         WHERE t.credit_account_id = a.id) AS m
         WHERE m.seq IS NOT NULL
        RETURNING account_id, seq
    )
    INSERT INTO risk_in_rollups (account_id, span, start, n, total, sq, band)
    SELECT t.credit_account_id, s.span,
           (floor(extract(epoch FROM t.created_at) / s.span) * s.span)::bigint,
           count(*), sum(t.amount), sum(t.amount * t.amount),
           count(*) FILTER (WHERE t.amount >= p_low AND t.amount < p_top)
      FROM marks k
      JOIN ledger_transfers t ON t.credit_account_id = k.account_id AND t.seq <= k.seq
      CROSS JOIN (VALUES (60), (3600), (86400)) AS s(span)
     WHERE t.kind IN {_CREDIT} AND t.created_at >= now() - interval '32 days'
     GROUP BY 1, 2, 3;
END
$fn$;
SELECT risk_in_rebuild(NULL, NULL, NULL);
"""


def _earlier() -> Any:
    """Migration 0039's module: its statement splitter, function replacement and body."""
    return load("2026_12_05_0039_risk_rollups.py")


def _incoming() -> str:
    """The subquery ``i`` (count, sum, sum of squares per window; the band; the rapid sum)
    from the credit roll-ups, the mark read in the same statement (one snapshot). The band's
    and the rapid sum's windows may be the 7-day and the 1-hour one (the band's is, in the
    default rule set): read again only when they are not."""
    cols, joins = [], []
    for name in _WINDOWS:
        joins.append(f"CROSS JOIN LATERAL risk_in_window(p_account, p_since_{name}, mk.mark, "
                     f"p_low, p_top) AS w{name}")
        cols += [f'w{name}.n::bigint AS "in.count.{name}"',
                 f'w{name}.total::float8 AS "in.sum.{name}"',
                 f'w{name}.sq::float8 AS "in.sq.{name}"']

    def reuse(since: str, name: str, column: str) -> str:
        return (f"CASE WHEN {since} = p_since_{name} THEN w{name}.{column} ELSE "
                f"(SELECT x.{column} FROM risk_in_window(p_account, {since}, mk.mark, p_low, "
                f"p_top) AS x) END")

    nl = "\n        "
    return f"""    JOIN (SELECT
          {", ".join(cols)},
          ({reuse("greatest(p_s_since, p_since)", "7d", "band")})::bigint AS "in.band",
          ({reuse("greatest(p_r_since, p_since)", "1h", "total")})::float8 AS "in.rapid"
        FROM (SELECT coalesce((SELECT k.seq FROM risk_in_marks k
                                WHERE k.account_id = p_account), 0) AS mark) AS mk
        {nl.join(joins)}) AS i ON true
"""


_FOLD = """    -- The wallet's credits drawn since its last screening, into its roll-ups: what is
    -- read below is its money in as of this fold (a credit committed after it is read by the
    -- next screening, as one committed after a read of the rows would be).
    PERFORM risk_in_fold(p_account, p_low, p_top);
    -- A new statement, so a new snapshot"""


def _body(earlier: Any) -> str:
    """0039's body with its incoming subquery replaced and a fold before the query."""
    body: str = earlier._body(earlier._earlier())
    start = body.index('    JOIN (SELECT\n          count(*) FILTER (WHERE ts >= p_since_1h) '
                       'AS "in.count.1h"')
    end = body.index("    JOIN (SELECT\n          max(CASE WHEN a.label = 'sanctioned'")
    body = body[:start] + _incoming() + body[end:]
    anchor = "    -- A new statement, so a new snapshot"
    assert body.count(anchor) == 1
    return body.replace(anchor, _FOLD)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite reads the rows themselves (one process, no lock to hold short)
    earlier = _earlier()
    for statement in earlier._statements(_TABLES + _FUNCTIONS + _REBUILD):
        op.execute(statement)
    earlier._replace_function(earlier._earlier(), _body(earlier))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    earlier = _earlier()
    earlier._replace_function(earlier._earlier(), earlier._body(earlier._earlier()))
    for statement in earlier._statements("""
DROP FUNCTION risk_in_fold(bigint, numeric, numeric);
DROP FUNCTION risk_in_rebuild(bigint, numeric, numeric);
DROP FUNCTION risk_in_window(bigint, timestamptz, bigint, numeric, numeric);
DROP INDEX ix_ledger_transfers_credit;
CREATE INDEX ix_ledger_transfers_credit ON ledger_transfers (credit_account_id, seq);
DROP TABLE risk_in_rollups;
DROP TABLE risk_in_marks;
"""):
        op.execute(statement)
