"""withdrawals.released_at: a withdrawal held for approvers or for review counts in the
withdrawal limits from its release, not only from its request

A held withdrawal counted in the rolling windows (the platform's 24 hours, the KYC tier's
24 hours and 30 days) from ``created_at`` only, so one released a day after it was asked
for left beside a day's worth of others: twice the limit within 24 hours. Its release now
sets ``released_at`` (and is refused when what the wallet withdrew before it leaves no room,
``satvault.payouts.service.check_limits_at_release``), and a window ``[since, now]`` counts a
live withdrawal whose ``created_at`` or ``released_at`` is in it.

On PostgreSQL the limits read ``risk_spent_since`` (migration 0039: the roll-ups by
``created_at``, exact), which now adds the live withdrawals released inside the window but
asked for before it, through a partial index that holds only withdrawals that were released
(none for a wallet whose withdrawals never waited: one empty index probe). The roll-ups and
the risk screening's windows are unchanged: they describe requests. SQLite reads the rows.

Revision ID: 0050_held_withdrawal_limits
Revises: 0049_screening_normal_form
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0050_held_withdrawal_limits"
down_revision: str | None = "0049_screening_normal_form"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEAD = "('failed', 'cancelled')"

# 0039's body, with the withdrawals released inside the window but asked for before it.
_SPENT = f"""
CREATE OR REPLACE FUNCTION risk_spent_since(p_wallet text, p_method text, p_since timestamptz)
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
                          AND g.n > 0)){{released}}
      FROM risk_rollup_window(p_wallet, coalesce('rail:' || p_method, 'out'), p_since) AS r
$fn$
"""
_RELEASED = f""" + (
        SELECT coalesce(sum(w.amount_msat), 0) FROM withdrawals w
         WHERE w.wallet_id = p_wallet AND w.released_at >= p_since
           AND w.created_at < p_since
           AND w.status NOT IN {_DEAD} AND (p_method IS NULL OR w.method = p_method))"""


def upgrade() -> None:
    op.add_column("withdrawals", sa.Column("released_at", sa.DateTime(timezone=True),
                                                 nullable=True))
    op.create_index("ix_withdrawals_wallet_released", "withdrawals",
                    ["wallet_id", "released_at"],
                    sqlite_where=sa.text("released_at IS NOT NULL"),
                    postgresql_where=sa.text("released_at IS NOT NULL"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SPENT.replace("{released}", _RELEASED))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SPENT.replace("{released}", ""))
    op.drop_index("ix_withdrawals_wallet_released", table_name="withdrawals")
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_column("released_at")
