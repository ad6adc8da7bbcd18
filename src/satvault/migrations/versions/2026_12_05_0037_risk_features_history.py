"""the risk screening's cost stops growing with the payer's all-time history, and its
distinct counterparties are counted in one grouped pass (issue 10)

Measured on PostgreSQL with 3,000 withdrawals of one wallet in the last hour (a busy payer:
``benchmarks/risk_history.py``): ``risk_screen_features`` took ~16 ms, and it runs under the
wallet's row lock, so that wallet's payments were serialised behind it (123 → 32 payments/s
over ~2,400 payments of one payer). Two parts of it grew with the history:

* ``out.counterparties.<window>`` was four ``count(DISTINCT CASE … destination END)``, each
  one sort of the window's destinations (BOLT11 strings of ~300 characters): ~12 of the 16
  ms. A destination was paid within a window exactly when its latest live withdrawal falls
  in it, so one grouped pass (``max(created_at)`` per destination, a hash aggregate) and four
  conditional counts over its rows give the same four numbers.
* ``seen`` (earlier live withdrawals of this wallet to the destination or counterparty) read
  every withdrawal the wallet ever made. An index on ``(wallet_id, md5(destination))`` finds
  just the matching rows; the condition keeps the exact comparison, so the hash only narrows
  the search (PostgreSQL's B-tree entries are limited to ~2.7 kB and a destination may be
  2,000 characters, hence the hash; SQLite has no such limit and indexes the text).

The window sums read 30 days at most (``ix_withdrawals_wallet_created``, 0020) and now cast
each amount to float8 once and aggregate with FILTER clauses instead of a CASE per aggregate
and row (~30% less for that part; the same sums, since adding a CASE's 0.0 never changed a
float).

The function keeps its signature and its columns (names, order, types): only its body
changes. The SQLite statement (``satvault.risk.features._query``) changes the same way.

Revision ID: 0037_risk_features_history
Revises: 0036_approver_group_changes
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from typing import Any

from alembic import op

from satvault.migrations.siblings import load

revision: str = "0037_risk_features_history"
down_revision: str | None = "0036_approver_group_changes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WINDOWS = ("1h", "24h", "7d", "30d")
_LIVE = "{a}.status <> 'failed' AND {a}.status <> 'cancelled'"


def _sums(prefix: str) -> list[str]:
    """Per window: count, sum and sum of squares of ``a`` (the amount as float8, cast once
    per row) over the rows with ``ts`` inside: aggregate FILTERs, not a CASE per aggregate
    and row (the same sums: adding the CASE's 0.0 never changed a float)."""
    cols = []
    for name in _WINDOWS:
        inside = f"FILTER (WHERE ts >= p_since_{name})"
        cols += [
            f'count(*) {inside} AS "{prefix}.count.{name}"',
            f'coalesce(sum(a) {inside}, 0.0)::float8 AS "{prefix}.sum.{name}"',
            f'coalesce(sum(a * a) {inside}, 0.0)::float8 AS "{prefix}.sq.{name}"']
    return cols


def _row() -> str:
    """The returned columns in the function's order (0035's), from the subqueries."""
    cols = []
    for d in ("out", "in"):
        for name in _WINDOWS:
            cols += [f'{d[0]}."{d}.count.{name}"', f'{d[0]}."{d}.sum.{name}"',
                     f'{d[0]}."{d}.sq.{name}"',
                     f'p."out.counterparties.{name}"' if d == "out"
                     else f'0::bigint AS "in.counterparties.{name}"']
        cols.append(f'{d[0]}."{d}.band"')
        if d == "in":
            cols.append('i."in.rapid"')
    return ", ".join(cols)


def _body() -> str:
    out_cols = ",\n          ".join([
        *_sums("out"),
        'count(*) FILTER (WHERE ts >= p_s_since AND m >= p_low AND m < p_top) AS "out.band"'])
    party_cols = ",\n          ".join(
        f'count(*) FILTER (WHERE d.last_at >= p_since_{name}) AS "out.counterparties.{name}"'
        for name in _WINDOWS)
    in_cols = ",\n          ".join([
        *_sums("in"),
        'count(*) FILTER (WHERE ts >= p_s_since AND m >= p_low AND m < p_top) AS "in.band"',
        'coalesce(sum(a) FILTER (WHERE ts >= p_r_since), 0.0)::float8 AS "in.rapid"'])
    return f"""
#variable_conflict use_column
BEGIN
    IF p_lock THEN
        -- The wallet's row lock: this wallet's payments are screened one after the other.
        PERFORM 1 FROM wallets WHERE wallets.id = p_wallet FOR UPDATE;
    END IF;
    -- A new statement, so a new snapshot (the function is VOLATILE): it sees every payment
    -- committed before the lock above was granted.
    RETURN QUERY
    SELECT {_row()}, l.*,
        (SELECT count(*) FROM withdrawals sw
          WHERE sw.wallet_id = p_wallet
            AND (md5(sw.destination) = md5(p_destination)
                 OR md5(sw.destination) = md5(p_counterparty))
            AND (sw.destination = p_destination OR sw.destination = p_counterparty)
            AND {_LIVE.format(a="sw")})::bigint,
        coalesce(CASE WHEN p_merchant
            THEN (SELECT u.kyc_tier FROM users u JOIN merchants m ON m.owner_user_id = u.id
                   WHERE m.id = p_owner)
            ELSE (SELECT u.kyc_tier FROM users u WHERE u.id = p_owner) END, 0)::integer,
        (SELECT rs.version FROM risk_rule_sets rs WHERE rs.status = 'live')::bigint,
        (SELECT rs.created_at FROM risk_rule_sets rs WHERE rs.status = 'live'),
        (SELECT wl.id FROM wallets wl WHERE wl.id = p_wallet)::text
    FROM (SELECT
          {out_cols}
        FROM (SELECT w.created_at AS ts, w.amount_msat::float8 AS a, w.amount_msat AS m
                FROM withdrawals w
               WHERE w.wallet_id = p_wallet AND w.created_at >= p_since
                 AND {_LIVE.format(a="w")}) AS ow) AS o
    JOIN (SELECT
          {party_cols}
        FROM (SELECT max(w.created_at) AS last_at
                FROM withdrawals w
               WHERE w.wallet_id = p_wallet AND w.created_at >= p_since
                 AND {_LIVE.format(a="w")}
               GROUP BY w.destination) AS d) AS p ON true
    JOIN (SELECT
          {in_cols}
        FROM (SELECT t.created_at AS ts, t.amount::float8 AS a, t.amount AS m
                FROM ledger_transfers t
               WHERE t.credit_account_id = p_account AND t.created_at >= p_since
                 AND (t.kind = 'single' OR t.kind = 'post')) AS it) AS i ON true
    JOIN (SELECT
          max(CASE WHEN a.label = 'sanctioned' THEN 1 ELSE 0 END)::integer AS sanctioned,
          coalesce(sum(CASE WHEN a.label <> 'sanctioned' THEN a.score ELSE 0 END), 0)::bigint
            AS label_score,
          string_agg(a.label, ',')::text AS labels,
          min(a.first_seen_at) AS first_seen
        FROM risk_address_labels a
        WHERE a.address = ANY (p_parties)) AS l ON true;
END
"""


_SIGNATURE = """risk_screen_features(
    p_lock boolean, p_wallet text, p_account bigint, p_owner text, p_merchant boolean,
    p_destination text, p_counterparty text, p_parties text[],
    p_since timestamptz, p_since_1h timestamptz, p_since_24h timestamptz,
    p_since_7d timestamptz, p_since_30d timestamptz, p_s_since timestamptz,
    p_r_since timestamptz, p_low numeric, p_top numeric)"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index("ix_withdrawals_wallet_party", "withdrawals",
                        ["wallet_id", "destination"])
        return
    op.execute("CREATE INDEX ix_withdrawals_wallet_party "
               "ON withdrawals (wallet_id, md5(destination))")
    # Same signature and columns: the body is replaced in place (plans cached by open
    # sessions are invalidated by the catalogue change).
    op.execute(f"""
CREATE OR REPLACE FUNCTION {_SIGNATURE}
{_returns_clause()}
LANGUAGE plpgsql VOLATILE
AS $fn${_body()}$fn$""")


def _earlier() -> Any:
    """Migration 0035's module: its columns (unchanged here) and, for the downgrade, its body."""
    return load("2026_12_04_0035_risk_features_function.py")


def _returns_clause() -> str:
    return f"RETURNS TABLE (\n    {_earlier()._returns()})"


def downgrade() -> None:
    # Back to 0035's body (the same columns), then the index goes.
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index("ix_withdrawals_wallet_party", "withdrawals")
        return
    op.execute(f"""
CREATE OR REPLACE FUNCTION {_SIGNATURE}
{_returns_clause()}
LANGUAGE plpgsql VOLATILE
AS $fn${_earlier()._body()}$fn$""")
    op.execute("DROP INDEX ix_withdrawals_wallet_party")
