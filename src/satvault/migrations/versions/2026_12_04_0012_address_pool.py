"""the deposit address pool (issue 10): a partial index over the look-ahead rows, which a
request claims lowest index first with one statement

Revision ID: 0012_address_pool
Revises: 0011_daily_limit_function
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_address_pool"
down_revision: str | None = "0011_daily_limit_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POOLED = "status = 'lookahead'"


def upgrade() -> None:
    op.create_index("ix_onchain_addresses_pool", "onchain_addresses",
                    ["wallet_id", "chain", "idx"], sqlite_where=sa.text(POOLED),
                    postgresql_where=sa.text(POOLED))


def downgrade() -> None:
    op.drop_index("ix_onchain_addresses_pool", "onchain_addresses")
