"""the risk screening's windows count a withdrawal held and released late from its release
too, as the limits do since 0050

A withdrawal held for approvers or for review counted in the screening's windows (the
velocity counts and sums, mean and deviation, distinct destinations, the structuring band)
from its request only. Released a day after it was asked for, it was outside every 24-hour
window at the next screening just as its money left, so a payer moved twice a velocity
rule's sum within 24 hours unchallenged. A window ``[since, now]`` now holds a live
withdrawal whose request or release is inside it, once (the row-by-row query,
``satvault.risk.features._query``, reads ``coalesce(released_at, created_at)``).

The roll-ups stay keyed by request (the trigger, the limits' ``risk_spent_since`` and the
drift check are unchanged). Each window adds the live withdrawals released inside it but
asked for before it, through 0050's partial index on ``(wallet_id, released_at)``, which
holds only released withdrawals: for a wallet whose withdrawals never waited, one empty
index probe per window. The distinct destinations add those released inside the window
whose latest request (``risk_last_paid``) is before it; the band adds its released ones.

Revision ID: 0053_held_velocity
Revises: 0052_lnurl_auth_tokens
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0053_held_velocity"
down_revision: str | None = "0052_lnurl_auth_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEAD = "('failed', 'cancelled')"

_OUT = f"""
CREATE OR REPLACE FUNCTION risk_out_window(p_wallet text, p_since timestamptz)
RETURNS TABLE (n bigint, total float8, sq float8)
LANGUAGE sql STABLE AS $fn$
    SELECT (r.n + e.n{{n}})::bigint, (r.total + e.total{{total}})::float8,
           (r.sq + e.sq{{sq}})::float8
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
                              AND g.n > 0)) AS e{{released}}
$fn$
"""
_OUT_RELEASED = f""",
           -- Released inside the window, asked for before it (0050's partial index).
           (SELECT count(*) AS n, coalesce(sum(w.amount_msat), 0) AS total,
                   coalesce(sum(w.amount_msat * w.amount_msat), 0) AS sq
              FROM withdrawals w
             WHERE w.wallet_id = p_wallet AND w.released_at >= p_since
               AND w.created_at < p_since AND w.status NOT IN {_DEAD}) AS x"""

_PARTY = """
CREATE OR REPLACE FUNCTION risk_party_window(p_wallet text, p_since timestamptz)
RETURNS TABLE (n bigint)
LANGUAGE sql STABLE AS $fn$
    SELECT (r.n + e.n{n})::bigint
      FROM risk_rollup_window(p_wallet, 'party', p_since) AS r,
           (SELECT count(*) AS n FROM risk_last_paid l
             WHERE l.wallet_id = p_wallet AND l.last_at >= p_since
               AND l.last_at < to_timestamp(ceil(extract(epoch FROM p_since) / 60) * 60)
           ) AS e{released}
$fn$
"""
# A destination paid by a withdrawal released inside the window, whose latest request is
# before it (a later request put it in the window already).
_PARTY_RELEASED = f""",
           (SELECT count(DISTINCT w.destination) AS n
              FROM withdrawals w
              JOIN risk_last_paid l
                ON l.wallet_id = w.wallet_id
               AND l.key = sha256(convert_to(w.destination, 'UTF8'))
             WHERE w.wallet_id = p_wallet AND w.released_at >= p_since
               AND w.status NOT IN {_DEAD} AND l.last_at < p_since) AS x"""

# The structuring band's withdrawals, in risk_screen_features (0041's body).
_BAND = ("(SELECT count(*) FROM withdrawals b WHERE b.wallet_id = p_wallet AND "
         "b.amount_msat >= p_low AND b.amount_msat < p_top AND b.created_at >= p_s_since AND "
         "b.created_at >= p_since AND b.status NOT IN ('failed', 'cancelled'))")
_BAND_RELEASED = (
    f"({_BAND} + (SELECT count(*) FROM withdrawals b WHERE b.wallet_id = p_wallet AND "
    "b.amount_msat >= p_low AND b.amount_msat < p_top "
    "AND b.released_at >= greatest(p_s_since, p_since) "
    "AND b.created_at < greatest(p_s_since, p_since) "
    "AND b.status NOT IN ('failed', 'cancelled')))")


def _screen_features(old: str, new: str) -> None:
    """risk_screen_features as it is, with ``old`` replaced by ``new`` (its definition as
    the server prints it keeps its ``ROWS 1``, migration 0042)."""
    found = op.get_bind().exec_driver_sql(
        "SELECT pg_get_functiondef('risk_screen_features'::regproc)").scalar_one()
    assert found.count(old) == 1, "risk_screen_features is not the body this migration knows"
    op.execute(found.replace(old, new))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite reads the rows (satvault.risk.features._query)
    op.execute(_OUT.replace("{n}", " + x.n").replace("{total}", " + x.total")
               .replace("{sq}", " + x.sq").replace("{released}", _OUT_RELEASED))
    op.execute(_PARTY.replace("{n}", " + x.n").replace("{released}", _PARTY_RELEASED))
    _screen_features(_BAND, _BAND_RELEASED)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _screen_features(_BAND_RELEASED, _BAND)
    op.execute(_PARTY.replace("{n}", "").replace("{released}", ""))
    op.execute(_OUT.replace("{n}", "").replace("{total}", "").replace("{sq}", "")
               .replace("{released}", ""))
