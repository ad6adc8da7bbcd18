"""a wallet's outgoing risk windows read from roll-ups, exact and bounded whatever its
history (issue 10)

``risk_screen_features`` read every live withdrawal of the wallet in the last 30 days for
the four windows' count, sum and sum of squares, and grouped them by destination for the
distinct counterparties: ~2.4 µs per withdrawal in the month, under the wallet's row lock, so
a busy payer (an exchange's hot wallet, a payroll merchant) paid for its whole month on every
payment.

Now a row trigger on ``withdrawals`` keeps, in the same transaction as each change:

* ``risk_rollups``: per wallet, per minute, hour and day (UTC, epoch-aligned) the count, sum
  and sum of squares of its live withdrawals (exact numerics) on all rails (kind ``out``)
  and per rail (kind ``rail:<method>``), and the number of destinations whose latest live
  withdrawal falls in that minute, hour or day (kind ``party``);
* ``risk_last_paid``: per wallet and destination (its SHA-256: destinations may be 2,000
  characters), the time of its latest live withdrawal.

A withdrawal counts while it is live (not failed, not cancelled): an insert adds it, a change
to failed or cancelled takes it out again (of the buckets of its own ``created_at``, and if
it was its destination's latest, the destination moves to its latest live one, read through
``ix_withdrawals_wallet_party``), as does a change of amount, time, destination, rail or
wallet. Taking out what the roll-ups do not hold (rows written with triggers off) is a
warning, never an error that would stop a failure, a cancellation or its refund.
Every writer of one wallet's roll-ups takes that wallet's transaction-level advisory lock
first, so writers never deadlock among themselves.

A window ``[since, now]`` is then read as four exact parts: the live withdrawals of the
partial minute ``[since, next minute)`` from the table (only when that minute's roll-up holds
any), the minute buckets up to the next hour, the hour buckets up to the next day, the day
buckets after: at most ~110 roll-up rows per window, whatever the history. The sums are exact
numerics cast to float8 once (the row-by-row float sum rounded at each step; the two agree to
float precision). The structuring band's count reads the withdrawals in the band through a
new index on ``(wallet_id, amount_msat, created_at)``: the wallet's near-threshold payments,
not all of them.

The withdrawal limits' sums (``withdrawal_usage`` of 0018, ``withdrawals_spent_since`` of
0011: 24 hours on all rails, 24 hours and 30 days on one rail, every withdrawal reads them
under the same lock) were the same bug a second time: they now add up the same buckets
(``risk_spent_since``, exact numerics), and keep their signatures and their wallet lock.

Money in (the ledger's credits) is still read row by row: the same roll-ups kept by a
statement trigger on ``ledger_transfers`` were built and measured, and cost the ledger's
one-transfer path 21-28% of its rate (170-260 µs of database time per transfer: a transition
table per statement), too much for every movement of money on the platform.

The function keeps its signature and columns; its body is 0037's with the outgoing part and
``seen`` replaced. The backfill covers every live withdrawal, through
``risk_rollups_rebuild``, which also rebuilds one wallet's (or all) roll-ups on demand
(``satvault risk rollups rebuild``, after ``satvault risk rollups check`` or a deep
reconciliation found them apart from the rows). SQLite keeps the one row-by-row statement
(``satvault.risk.features._query``), which is also what the tests compare the function with.

Revision ID: 0039_risk_rollups
Revises: 0038_withdrawals_wake_on_work
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from typing import Any

from alembic import op

from satvault.migrations.siblings import load

revision: str = "0039_risk_rollups"
down_revision: str | None = "0038_withdrawals_wake_on_work"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WINDOWS = ("1h", "24h", "7d", "30d")
_DEAD = "('failed', 'cancelled')"

_TABLES = """
CREATE TABLE risk_rollups (
    wallet_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('out', 'party') OR kind LIKE 'rail:%'),
    span integer NOT NULL CHECK (span IN (60, 3600, 86400)),
    start bigint NOT NULL,
    n bigint NOT NULL,
    total numeric NOT NULL,
    sq numeric NOT NULL,
    PRIMARY KEY (wallet_id, kind, span, start),
    CONSTRAINT ck_risk_rollups_not_negative CHECK (n >= 0 AND total >= 0 AND sq >= 0)
);
CREATE TABLE risk_last_paid (
    wallet_id text NOT NULL,
    key bytea NOT NULL,
    last_at timestamptz NOT NULL,
    prev_at timestamptz,
    PRIMARY KEY (wallet_id, key)
);
CREATE INDEX ix_risk_last_paid_wallet_at ON risk_last_paid (wallet_id, last_at);
CREATE INDEX ix_withdrawals_wallet_amount ON withdrawals (wallet_id, amount_msat, created_at);
"""

_FUNCTIONS = f"""
-- Take one withdrawal's amount (kind 'out' or 'rail:<method>') or one destination (kind
-- 'party', p_amount 0) out of the minute, hour and day that hold p_at: rows that should be
-- there (an upsert cannot subtract: a CHECK is tested on its proposed row before the
-- conflict is found). Where one is missing or holds less than it should (rows written with
-- the triggers off, before a rebuild), nothing goes below zero and the change goes through
-- with a warning: a withdrawal failing or being cancelled, and its refund, must not wait on
-- a risk aggregate; the roll-up check (and a deep reconciliation) names the wallet, and
-- `satvault risk rollups rebuild` mends it.
CREATE FUNCTION risk_rollup_take(p_wallet text, p_kind text, p_at timestamptz,
                                 p_amount numeric) RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_span integer;
BEGIN
    -- One statement per bucket, each naming its whole key (a row-value IN list is read as a
    -- range over the wallet's rows of that kind: every bucket it has).
    FOREACH v_span IN ARRAY ARRAY[60, 3600, 86400] LOOP
        UPDATE risk_rollups r
           SET n = greatest(r.n - 1, 0), total = greatest(r.total - p_amount, 0),
               sq = greatest(r.sq - p_amount * p_amount, 0)
         WHERE r.wallet_id = p_wallet AND r.kind = p_kind AND r.span = v_span
           AND r.start = (floor(extract(epoch FROM p_at) / v_span) * v_span)::bigint;
        IF NOT FOUND THEN
            RAISE WARNING 'risk roll-up % of wallet % has no bucket for % (rebuild it)',
                p_kind, p_wallet, p_at;
        END IF;
    END LOOP;
END
$fn$;

-- Put one withdrawal's amount (p_out: kind 'out', and 'rail:<method>' for its rail's limits)
-- and/or one destination (p_party) into the minute, hour and day that hold p_at: one
-- statement, rows in one order.
CREATE FUNCTION risk_rollup_put(p_wallet text, p_at timestamptz, p_amount numeric,
                                p_out boolean, p_party boolean, p_method text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    INSERT INTO risk_rollups AS r (wallet_id, kind, span, start, n, total, sq)
    SELECT p_wallet, k.kind, s.span,
           (floor(extract(epoch FROM p_at) / s.span) * s.span)::bigint,
           1, k.amount, k.amount * k.amount
      FROM (VALUES ('out', p_amount, p_out), ('party', 0::numeric, p_party),
                   ('rail:' || p_method, p_amount, p_out)) AS k(kind, amount, wanted),
           (VALUES (60), (3600), (86400)) AS s(span)
     WHERE k.wanted
     ORDER BY k.kind, s.span
    ON CONFLICT (wallet_id, kind, span, start) DO UPDATE
       SET n = r.n + 1, total = r.total + excluded.total, sq = r.sq + excluded.sq;
END
$fn$;

-- The trigger: what a withdrawal row was (OLD) goes out, what it is (NEW) comes in. An
-- insert (a payment) is three statements: the wallet's roll-up lock, the destination's
-- latest time, the roll-ups. The lock (a transaction-level advisory lock on the wallet, so
-- held to the commit) serialises every change to one wallet's roll-ups, whatever rows and
-- buckets each transaction touches in whatever order: they would contend anyway, on the
-- day's bucket, and cannot deadlock among themselves.
CREATE FUNCTION risk_rollup_withdrawals() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_key bytea;
    v_last timestamptz;
    v_now timestamptz;
    v_moved boolean;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.wallet_id <> NEW.wallet_id THEN
        PERFORM pg_advisory_xact_lock(39, hashtext(least(OLD.wallet_id, NEW.wallet_id)));
        PERFORM pg_advisory_xact_lock(39, hashtext(greatest(OLD.wallet_id, NEW.wallet_id)));
    ELSE
        PERFORM pg_advisory_xact_lock(
            39, hashtext(CASE WHEN TG_OP = 'DELETE' THEN OLD.wallet_id ELSE NEW.wallet_id END));
    END IF;
    IF TG_OP <> 'INSERT' AND OLD.status NOT IN {_DEAD} THEN
        v_key := sha256(convert_to(OLD.destination, 'UTF8'));
        SELECT l.last_at INTO v_last FROM risk_last_paid l
         WHERE l.wallet_id = OLD.wallet_id AND l.key = v_key FOR UPDATE;
        PERFORM risk_rollup_take(OLD.wallet_id, 'out', OLD.created_at, OLD.amount_msat);
        PERFORM risk_rollup_take(OLD.wallet_id, 'rail:' || OLD.method, OLD.created_at,
                                 OLD.amount_msat);
        IF v_last = OLD.created_at THEN
            -- It was its destination's latest: the latest live one now (NEW, if still one
            -- of them, is in the table already).
            SELECT max(w.created_at) INTO v_now FROM withdrawals w
             WHERE w.wallet_id = OLD.wallet_id
               AND md5(w.destination) = md5(OLD.destination)
               AND w.destination = OLD.destination AND w.status NOT IN {_DEAD};
            IF v_now IS DISTINCT FROM v_last THEN
                PERFORM risk_rollup_take(OLD.wallet_id, 'party', v_last, 0);
                IF v_now IS NULL THEN
                    DELETE FROM risk_last_paid l
                     WHERE l.wallet_id = OLD.wallet_id AND l.key = v_key;
                ELSE
                    UPDATE risk_last_paid l SET last_at = v_now, prev_at = NULL
                     WHERE l.wallet_id = OLD.wallet_id AND l.key = v_key;
                    PERFORM risk_rollup_put(OLD.wallet_id, v_now, 0, false, true, '');
                END IF;
            END IF;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status NOT IN {_DEAD} THEN
        -- A row back means the destination's latest moved to NEW: from nowhere (prev_at
        -- NULL: inserted) or from prev_at (updated); no row: it was as late already.
        INSERT INTO risk_last_paid AS l (wallet_id, key, last_at, prev_at)
        VALUES (NEW.wallet_id, sha256(convert_to(NEW.destination, 'UTF8')), NEW.created_at,
                NULL)
        ON CONFLICT (wallet_id, key) DO UPDATE
           SET prev_at = l.last_at, last_at = excluded.last_at
         WHERE l.last_at < excluded.last_at
        RETURNING l.prev_at INTO v_last;
        v_moved := FOUND;
        PERFORM risk_rollup_put(NEW.wallet_id, NEW.created_at, NEW.amount_msat, true,
                                v_moved, NEW.method);
        IF v_moved AND v_last IS NOT NULL THEN
            PERFORM risk_rollup_take(NEW.wallet_id, 'party', v_last, 0);
        END IF;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER withdrawals_risk_rollup AFTER INSERT OR DELETE ON withdrawals
FOR EACH ROW EXECUTE FUNCTION risk_rollup_withdrawals();
CREATE TRIGGER withdrawals_risk_rollup_change AFTER UPDATE ON withdrawals
FOR EACH ROW WHEN ((OLD.status IN {_DEAD}) IS DISTINCT FROM (NEW.status IN {_DEAD})
                   OR OLD.created_at IS DISTINCT FROM NEW.created_at
                   OR OLD.amount_msat IS DISTINCT FROM NEW.amount_msat
                   OR OLD.destination IS DISTINCT FROM NEW.destination
                   OR OLD.method IS DISTINCT FROM NEW.method
                   OR OLD.wallet_id IS DISTINCT FROM NEW.wallet_id)
EXECUTE FUNCTION risk_rollup_withdrawals();

-- The buckets wholly inside [p_since, +inf): minutes up to the next hour, hours up to the
-- next day, days after (the partial minute before them is read from the rows themselves).
CREATE FUNCTION risk_rollup_window(p_wallet text, p_kind text, p_since timestamptz)
RETURNS TABLE (n numeric, total numeric, sq numeric)
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(sum(r.n), 0), coalesce(sum(r.total), 0), coalesce(sum(r.sq), 0)
      FROM (SELECT (ceil(extract(epoch FROM p_since) / 60) * 60)::bigint AS m,
                   (ceil(extract(epoch FROM p_since) / 3600) * 3600)::bigint AS h,
                   (ceil(extract(epoch FROM p_since) / 86400) * 86400)::bigint AS d) AS b,
           LATERAL (
            SELECT x.n, x.total, x.sq FROM risk_rollups x
             WHERE x.wallet_id = p_wallet AND x.kind = p_kind AND x.span = 60
               AND x.start >= b.m AND x.start < b.h
            UNION ALL
            SELECT x.n, x.total, x.sq FROM risk_rollups x
             WHERE x.wallet_id = p_wallet AND x.kind = p_kind AND x.span = 3600
               AND x.start >= b.h AND x.start < b.d
            UNION ALL
            SELECT x.n, x.total, x.sq FROM risk_rollups x
             WHERE x.wallet_id = p_wallet AND x.kind = p_kind AND x.span = 86400
               AND x.start >= b.d) AS r
$fn$;

-- One window of the wallet's live withdrawals: count, sum, sum of squares.
CREATE FUNCTION risk_out_window(p_wallet text, p_since timestamptz)
RETURNS TABLE (n bigint, total float8, sq float8)
LANGUAGE sql STABLE AS $fn$
    SELECT (r.n + e.n)::bigint, (r.total + e.total)::float8, (r.sq + e.sq)::float8
      FROM risk_rollup_window(p_wallet, 'out', p_since) AS r,
           (SELECT count(*) AS n, coalesce(sum(w.amount_msat), 0) AS total,
                   coalesce(sum(w.amount_msat * w.amount_msat), 0) AS sq
              FROM withdrawals w
             WHERE w.wallet_id = p_wallet AND w.created_at >= p_since
               AND w.created_at < to_timestamp(ceil(extract(epoch FROM p_since) / 60) * 60)
               AND w.status NOT IN {_DEAD}
               -- Only if that minute holds any (a one-time test: most edges are empty).
               AND EXISTS (SELECT 1 FROM risk_rollups g
                            WHERE g.wallet_id = p_wallet AND g.kind = 'out' AND g.span = 60
                              AND g.start = (floor(extract(epoch FROM p_since) / 60) * 60)::bigint
                              AND g.n > 0)) AS e
$fn$;

-- What the wallet's live withdrawals since p_since add up to, exactly (numeric): on one rail
-- (p_method) or all (NULL). The 24-hour and 30-day withdrawal limits read this. A table of one
-- row, to be used in FROM: inlined there into the caller's (cached) plan, where a scalar SQL
-- function would be planned again on every call.
CREATE FUNCTION risk_spent_since(p_wallet text, p_method text, p_since timestamptz)
RETURNS TABLE (total numeric)
LANGUAGE sql STABLE AS $fn$
    SELECT r.total + (
        SELECT coalesce(sum(w.amount_msat), 0) FROM withdrawals w
         WHERE w.wallet_id = p_wallet AND w.created_at >= p_since
           AND w.created_at < to_timestamp(ceil(extract(epoch FROM p_since) / 60) * 60)
           AND w.status NOT IN {_DEAD} AND (p_method IS NULL OR w.method = p_method)
           AND EXISTS (SELECT 1 FROM risk_rollups g
                        WHERE g.wallet_id = p_wallet AND g.span = 60
                          AND g.kind = coalesce('rail:' || p_method, 'out')
                          AND g.start = (floor(extract(epoch FROM p_since) / 60) * 60)::bigint
                          AND g.n > 0))
      FROM risk_rollup_window(p_wallet, coalesce('rail:' || p_method, 'out'), p_since) AS r
$fn$;

-- One window's distinct destinations: those whose latest live withdrawal is inside it.
-- (Functions returning a table and made of one SELECT are inlined into the caller's plan.)
CREATE FUNCTION risk_party_window(p_wallet text, p_since timestamptz)
RETURNS TABLE (n bigint)
LANGUAGE sql STABLE AS $fn$
    SELECT (r.n + e.n)::bigint
      FROM risk_rollup_window(p_wallet, 'party', p_since) AS r,
           (SELECT count(*) AS n FROM risk_last_paid l
             WHERE l.wallet_id = p_wallet AND l.last_at >= p_since
               AND l.last_at < to_timestamp(ceil(extract(epoch FROM p_since) / 60) * 60)) AS e
$fn$;
"""

# Rebuilding from the rows: the backfill here, and what an operator runs when a check finds the
# roll-ups and the rows apart (triggers bypassed by a data-only restore, say).
_REBUILD = f"""
-- One wallet's roll-ups (or, with NULL, every wallet's) rebuilt from its withdrawals: under
-- the wallet's roll-up lock (every table's, for all), so no writer is half counted.
CREATE FUNCTION risk_rollups_rebuild(p_wallet text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF p_wallet IS NULL THEN
        LOCK TABLE risk_rollups, risk_last_paid IN EXCLUSIVE MODE;
    ELSE
        PERFORM pg_advisory_xact_lock(39, hashtext(p_wallet));
    END IF;
    DELETE FROM risk_rollups r WHERE p_wallet IS NULL OR r.wallet_id = p_wallet;
    DELETE FROM risk_last_paid l WHERE p_wallet IS NULL OR l.wallet_id = p_wallet;
    INSERT INTO risk_rollups (wallet_id, kind, span, start, n, total, sq)
    SELECT w.wallet_id, 'out', s.span,
           (floor(extract(epoch FROM w.created_at) / s.span) * s.span)::bigint,
           count(*), sum(w.amount_msat), sum(w.amount_msat * w.amount_msat)
      FROM withdrawals w, (VALUES (60), (3600), (86400)) AS s(span)
     WHERE w.status NOT IN {_DEAD} AND (p_wallet IS NULL OR w.wallet_id = p_wallet)
     GROUP BY 1, 2, 3, 4;
    INSERT INTO risk_rollups (wallet_id, kind, span, start, n, total, sq)
    SELECT w.wallet_id, 'rail:' || w.method, s.span,
           (floor(extract(epoch FROM w.created_at) / s.span) * s.span)::bigint,
           count(*), sum(w.amount_msat), sum(w.amount_msat * w.amount_msat)
      FROM withdrawals w, (VALUES (60), (3600), (86400)) AS s(span)
     WHERE w.status NOT IN {_DEAD} AND (p_wallet IS NULL OR w.wallet_id = p_wallet)
     GROUP BY 1, 2, 3, 4;
    INSERT INTO risk_last_paid (wallet_id, key, last_at)
    SELECT w.wallet_id, sha256(convert_to(w.destination, 'UTF8')), max(w.created_at)
      FROM withdrawals w
     WHERE w.status NOT IN {_DEAD} AND (p_wallet IS NULL OR w.wallet_id = p_wallet)
     GROUP BY w.wallet_id, w.destination;
    INSERT INTO risk_rollups (wallet_id, kind, span, start, n, total, sq)
    SELECT l.wallet_id, 'party', s.span,
           (floor(extract(epoch FROM l.last_at) / s.span) * s.span)::bigint, count(*), 0, 0
      FROM risk_last_paid l, (VALUES (60), (3600), (86400)) AS s(span)
     WHERE p_wallet IS NULL OR l.wallet_id = p_wallet
     GROUP BY 1, 2, 3, 4;
END
$fn$;
SELECT risk_rollups_rebuild(NULL);
"""


def _statements(sql: str) -> list[str]:
    """``sql`` cut at each ``;`` that ends a line outside a ``$fn$`` body: the driver takes one
    statement per call."""
    out, part = [], ""
    for line in sql.splitlines(keepends=True):
        part += line
        if line.rstrip().endswith(";") and part.count("$fn$") % 2 == 0:
            out.append(part.strip().removesuffix(";"))
            part = ""
    assert not part.strip(), part
    return out


def _earlier() -> Any:
    """Migration 0037's module: the function's signature, columns and body at that revision."""
    return load("2026_12_05_0037_risk_features_history.py")


def _outgoing() -> str:
    """The subqueries ``o`` (count, sum, sum of squares per window; the structuring band)
    and ``p`` (distinct destinations per window) from the roll-ups."""
    cols, joins = [], []
    for name in _WINDOWS:
        cols += [f'w{name}.n AS "out.count.{name}"', f'w{name}.total AS "out.sum.{name}"',
                 f'w{name}.sq AS "out.sq.{name}"']
        joins.append(f"risk_out_window(p_wallet, p_since_{name}) AS w{name}")
    band = ("(SELECT count(*) FROM withdrawals b WHERE b.wallet_id = p_wallet "
            "AND b.amount_msat >= p_low AND b.amount_msat < p_top "
            "AND b.created_at >= p_s_since AND b.created_at >= p_since "
            f'AND b.status NOT IN {_DEAD}) AS "out.band"')
    parties = ", ".join(f'p{name}.n AS "out.counterparties.{name}"' for name in _WINDOWS)
    party_joins = ", ".join(f"risk_party_window(p_wallet, p_since_{name}) AS p{name}"
                            for name in _WINDOWS)
    return f"""    FROM (SELECT
          {", ".join(cols)},
          {band}
        FROM {", ".join(joins)}) AS o
    JOIN (SELECT
          {parties}
        FROM {party_joins}) AS p ON true
"""


# ``seen`` as two counts, each on one hash of the index on (wallet_id, md5(destination)): the
# same number as 0037's one count with an OR (a row matching both is counted by the first),
# but a plan the planner cannot get wrong before it has statistics (with the OR it could pick
# any index led by wallet_id and filter the wallet's every withdrawal).
_SEEN_0037 = """        (SELECT count(*) FROM withdrawals sw
          WHERE sw.wallet_id = p_wallet
            AND (md5(sw.destination) = md5(p_destination)
                 OR md5(sw.destination) = md5(p_counterparty))
            AND (sw.destination = p_destination OR sw.destination = p_counterparty)
            AND sw.status <> 'failed' AND sw.status <> 'cancelled')::bigint,"""
_SEEN = f"""        ((SELECT count(*) FROM withdrawals sw
           WHERE sw.wallet_id = p_wallet AND md5(sw.destination) = md5(p_destination)
             AND sw.destination = p_destination AND sw.status NOT IN {_DEAD})
         + (SELECT count(*) FROM withdrawals sw
             WHERE sw.wallet_id = p_wallet AND md5(sw.destination) = md5(p_counterparty)
               AND sw.destination = p_counterparty AND sw.destination <> p_destination
               AND sw.status NOT IN {_DEAD}))::bigint,"""


def _body(earlier: Any) -> str:
    """0037's body with its outgoing windows (from ``FROM`` to the incoming subquery) and
    ``seen`` replaced."""
    body: str = earlier._body()
    start = body.index("    FROM (SELECT\n")
    end = body.index('    JOIN (SELECT\n          count(*) FILTER (WHERE ts >= p_since_1h) '
                     'AS "in.count.1h"')
    body = body[:start] + _outgoing() + body[end:]
    assert body.count(_SEEN_0037) == 1
    return body.replace(_SEEN_0037, _SEEN)


def _replace_function(earlier: Any, body: str) -> None:
    op.execute(f"""
CREATE OR REPLACE FUNCTION {earlier._SIGNATURE}
{earlier._returns_clause()}
LANGUAGE plpgsql VOLATILE
AS $fn${body}$fn$""")


# The withdrawal limits' sums (migrations 0011 and 0018) from the same roll-ups: the wallet's
# lock first, as before, then sums that no longer read the day's or the month's rows.
_LIMITS = """
CREATE OR REPLACE FUNCTION withdrawals_spent_since(p_wallet varchar, p_since timestamptz)
RETURNS numeric LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    spent numeric;
BEGIN
    PERFORM 1 FROM wallets WHERE id = p_wallet FOR UPDATE;
    SELECT a.total INTO spent FROM risk_spent_since(p_wallet, NULL, p_since) AS a;
    RETURN spent;
END
$fn$;
CREATE OR REPLACE FUNCTION withdrawal_usage(p_wallet varchar, p_method varchar,
                                            p_day timestamptz, p_month timestamptz)
RETURNS TABLE(spent_day numeric, rail_day numeric, rail_month numeric, frozen boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    SELECT w.frozen_at IS NOT NULL INTO frozen FROM wallets w WHERE w.id = p_wallet FOR UPDATE;
    SELECT a.total, b.total, c.total INTO spent_day, rail_day, rail_month
      FROM risk_spent_since(p_wallet, NULL, p_day) AS a,
           risk_spent_since(p_wallet, p_method, p_day) AS b,
           risk_spent_since(p_wallet, p_method, p_month) AS c;
    frozen := coalesce(frozen, false);
    RETURN NEXT;
END
$fn$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite reads the rows themselves (one process, no lock to hold short)
    for statement in _statements(_TABLES + _FUNCTIONS + _REBUILD + _LIMITS):
        op.execute(statement)
    earlier = _earlier()
    _replace_function(earlier, _body(earlier))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    earlier = _earlier()
    _replace_function(earlier, earlier._body())
    # The limits' functions as 0011 and 0018 wrote them.
    op.execute(load("2026_12_04_0011_daily_limit_function.py").FUNCTION)
    op.execute(load("2026_12_04_0018_kyc.py").PG_USAGE)
    for statement in _statements("""
DROP TRIGGER withdrawals_risk_rollup_change ON withdrawals;
DROP TRIGGER withdrawals_risk_rollup ON withdrawals;
DROP FUNCTION risk_rollups_rebuild(text);
DROP FUNCTION risk_party_window(text, timestamptz);
DROP FUNCTION risk_spent_since(text, text, timestamptz);
DROP FUNCTION risk_out_window(text, timestamptz);
DROP FUNCTION risk_rollup_window(text, text, timestamptz);
DROP FUNCTION risk_rollup_withdrawals();
DROP FUNCTION risk_rollup_put(text, timestamptz, numeric, boolean, boolean, text);
DROP FUNCTION risk_rollup_take(text, text, timestamptz, numeric);
DROP INDEX ix_withdrawals_wallet_amount;
DROP TABLE risk_last_paid;
DROP TABLE risk_rollups;
"""):
        op.execute(statement)
