"""accepted_rates: the rates the rate service accepted, shared by every process

The movement bound (``SATVAULT_RATE_MAX_MOVE_BP``) compared a new rate with the last one the
same process had accepted, held in its memory: after a restart, and in each of several
processes, the first rate had no bound. The accepted rates are now rows here (one per rate
fetch, per currency numbered by ``seq``, pruned to the longest bound's window), which the
new drift bound (``SATVAULT_RATE_MAX_DRIFT_BP``) also reads. Starts empty: the first rate
after this migration is bounded only by the agreement between sources, as before.

Revision ID: 0060_accepted_rates
Revises: 0059_webhook_secret_rotation
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0060_accepted_rates"
down_revision: str | None = "0059_webhook_secret_rotation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accepted_rates",
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("minor_per_btc", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_by", sa.String(80), nullable=True),
        sa.CheckConstraint("minor_per_btc > 0", name=op.f("ck_accepted_rates_positive")),
        sa.PrimaryKeyConstraint("currency", "seq", name=op.f("pk_accepted_rates")),
    )
    op.create_index("ix_accepted_rates_currency_accepted_at", "accepted_rates",
                    ["currency", "accepted_at"])


def downgrade() -> None:
    op.drop_index("ix_accepted_rates_currency_accepted_at", table_name="accepted_rates")
    op.drop_table("accepted_rates")
