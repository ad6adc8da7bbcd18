"""three-way reconciliation (issue 13): reconciliation_runs, reconciliation_incidents

Revision ID: 0021_reconcile (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_reconcile"
down_revision: str | None = "0020_risk"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = "resolved_at IS NULL"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    bigint = sa.Integer() if sqlite else sa.BigInteger()
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", bigint, primary_key=True, autoincrement=True),
        sa.Column("started_at", ts, nullable=False),
        sa.Column("finished_at", ts, nullable=False),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("differences", sa.Integer(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
    )
    op.create_index("ix_reconciliation_runs_started_at", "reconciliation_runs", ["started_at"])
    op.create_table(
        "reconciliation_incidents",
        sa.Column("id", bigint, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("way", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("first_seen_at", ts, nullable=False),
        sa.Column("last_seen_at", ts, nullable=False),
        sa.Column("seen_runs", sa.Integer(), nullable=False),
        sa.Column("raised_at", ts, nullable=True),
        sa.Column("resolved_at", ts, nullable=True),
    )
    op.create_index("uq_reconciliation_incidents_open", "reconciliation_incidents",
                    ["kind", "subject"], unique=True, sqlite_where=sa.text(_OPEN),
                    postgresql_where=sa.text(_OPEN))


def downgrade() -> None:
    op.drop_index("uq_reconciliation_incidents_open", table_name="reconciliation_incidents")
    op.drop_table("reconciliation_incidents")
    op.drop_index("ix_reconciliation_runs_started_at", table_name="reconciliation_runs")
    op.drop_table("reconciliation_runs")
