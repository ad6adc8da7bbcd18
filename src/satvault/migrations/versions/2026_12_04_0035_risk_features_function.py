"""the risk screening in one round trip on PostgreSQL (issue 12 performance):
a function that takes the wallet's row lock, then reads the features

A screening on PostgreSQL was two statements: the wallet's row lock (``SELECT … FOR
UPDATE``), then the feature statement. Folding the lock into the feature statement would be
wrong under READ COMMITTED: a statement that waits for a row lock re-checks only the locked
row, and its aggregates keep the snapshot taken before the wait, so two racing withdrawals
of one wallet could each miss the other. ``risk_screen_features`` keeps the order — lock,
then a fresh snapshot — in one round trip: it is VOLATILE, and a volatile PL/pgSQL function
takes a new snapshot for each statement it runs, so the feature query (its second
statement) sees every row committed before the lock was granted. PL/pgSQL also keeps the
query's plan for the session (a generic plan after five runs), so the planning the client
statement paid per call goes too.

The query is the one ``satvault.risk.features`` builds for SQLite (same columns, same order,
same names), written out here as it stands at this revision: a later change to the features
changes the function in a migration of its own. ``p_parties`` is every address whose labels
count (a withdrawal's destination and counterparty, a deposit's senders too);
``p_merchant``: the owner is a merchant (its KYC tier is its owner user's).

SQLite has no stored functions and no row locks: it keeps the one feature statement.

Revision ID: 0035_risk_features_function (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0035_risk_features_function"
down_revision: str | None = "0034_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WINDOWS = ("1h", "24h", "7d", "30d")


def _window_columns(prefix: str, ts: str, amount: str, party: str | None) -> list[str]:
    cols = []
    for name in _WINDOWS:
        inside = f"{ts} >= p_since_{name}"
        cols += [
            f'count(CASE WHEN {inside} THEN 1 END)::bigint AS "{prefix}.count.{name}"',
            f"coalesce(sum(CASE WHEN {inside} THEN {amount}::float8 ELSE 0.0 END), 0.0)"
            f'::float8 AS "{prefix}.sum.{name}"',
            f"coalesce(sum(CASE WHEN {inside} THEN {amount}::float8 * {amount}::float8 "
            f'ELSE 0.0 END), 0.0)::float8 AS "{prefix}.sq.{name}"',
            (f"count(DISTINCT CASE WHEN {inside} THEN {party} END)::bigint"
             if party else "0::bigint") + f' AS "{prefix}.counterparties.{name}"',
        ]
    return cols


def _returns() -> str:
    cols = []
    for d in ("out", "in"):
        for name in _WINDOWS:
            cols += [f'"{d}.count.{name}" bigint', f'"{d}.sum.{name}" float8',
                     f'"{d}.sq.{name}" float8', f'"{d}.counterparties.{name}" bigint']
        cols.append(f'"{d}.band" bigint')
        if d == "in":
            cols.append('"in.rapid" float8')
    cols += ["sanctioned integer", "label_score bigint", "labels text",
             "first_seen timestamptz", "seen bigint", "tier integer", "live_version bigint",
             "live_created_at timestamptz", "wallet text"]
    return ",\n    ".join(cols)


def _body() -> str:
    out_cols = ",\n          ".join([
        *_window_columns("out", "w.created_at", "w.amount_msat", "w.destination"),
        "count(CASE WHEN w.created_at >= p_s_since AND w.amount_msat >= p_low "
        'AND w.amount_msat < p_top THEN 1 END)::bigint AS "out.band"'])
    in_cols = ",\n          ".join([
        *_window_columns("in", "t.created_at", "t.amount", None),
        "count(CASE WHEN t.created_at >= p_s_since AND t.amount >= p_low "
        'AND t.amount < p_top THEN 1 END)::bigint AS "in.band"',
        "coalesce(sum(CASE WHEN t.created_at >= p_r_since THEN t.amount::float8 "
        'ELSE 0.0 END), 0.0)::float8 AS "in.rapid"'])
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
    SELECT o.*, i.*, l.*,
        (SELECT count(*) FROM withdrawals sw
          WHERE sw.wallet_id = p_wallet
            AND (sw.destination = p_destination OR sw.destination = p_counterparty)
            AND sw.status <> 'failed' AND sw.status <> 'cancelled')::bigint,
        coalesce(CASE WHEN p_merchant
            THEN (SELECT u.kyc_tier FROM users u JOIN merchants m ON m.owner_user_id = u.id
                   WHERE m.id = p_owner)
            ELSE (SELECT u.kyc_tier FROM users u WHERE u.id = p_owner) END, 0)::integer,
        (SELECT rs.version FROM risk_rule_sets rs WHERE rs.status = 'live')::bigint,
        (SELECT rs.created_at FROM risk_rule_sets rs WHERE rs.status = 'live'),
        (SELECT wl.id FROM wallets wl WHERE wl.id = p_wallet)::text
    FROM (SELECT
          {out_cols}
        FROM withdrawals w
        WHERE w.wallet_id = p_wallet AND w.created_at >= p_since
          AND w.status <> 'failed' AND w.status <> 'cancelled') AS o
    JOIN (SELECT
          {in_cols}
        FROM ledger_transfers t
        WHERE t.credit_account_id = p_account AND t.created_at >= p_since
          AND (t.kind = 'single' OR t.kind = 'post')) AS i ON true
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


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
CREATE FUNCTION risk_screen_features(
    p_lock boolean, p_wallet text, p_account bigint, p_owner text, p_merchant boolean,
    p_destination text, p_counterparty text, p_parties text[],
    p_since timestamptz, p_since_1h timestamptz, p_since_24h timestamptz,
    p_since_7d timestamptz, p_since_30d timestamptz, p_s_since timestamptz,
    p_r_since timestamptz, p_low numeric, p_top numeric)
RETURNS TABLE (
    {_returns()})
LANGUAGE plpgsql VOLATILE
AS $fn${_body()}$fn$""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION risk_screen_features(boolean, text, bigint, text, boolean, "
                   "text, text, text[], timestamptz, timestamptz, timestamptz, timestamptz, "
                   "timestamptz, timestamptz, timestamptz, numeric, numeric)")
