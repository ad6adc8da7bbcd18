"""the rolling 24-hour withdrawal sum as one statement that serialises per wallet (PostgreSQL):
lock the wallet row, then sum with a snapshot taken after the lock

Revision ID: 0011_daily_limit_function
Revises: 0010_idempotency_claims
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011_daily_limit_function"
down_revision: str | None = "0010_idempotency_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# VOLATILE: each statement inside takes a fresh snapshot, so the sum sees every withdrawal
# committed by whoever held the wallet's lock before us (one SQL statement could not: its
# snapshot predates the wait). SQLite serialises writers already and sums inline.
FUNCTION = """
CREATE OR REPLACE FUNCTION withdrawals_spent_since(p_wallet varchar, p_since timestamptz)
RETURNS numeric LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    spent numeric;
BEGIN
    PERFORM 1 FROM wallets WHERE id = p_wallet FOR UPDATE;
    SELECT coalesce(sum(amount_msat), 0) INTO spent FROM withdrawals
     WHERE wallet_id = p_wallet AND created_at >= p_since
       AND status NOT IN ('failed', 'cancelled');
    RETURN spent;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS withdrawals_spent_since(varchar, timestamptz)")
