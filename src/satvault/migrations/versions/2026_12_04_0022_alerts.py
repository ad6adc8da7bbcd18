"""the alerts worker's state (issue 13): alert_states

Revision ID: 0022_alerts (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_alerts"
down_revision: str | None = "0021_reconcile"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "alert_states",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("firing", sa.Boolean, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("since", ts, nullable=False),
        sa.Column("notified", sa.Text, nullable=False, server_default="{}"),
        sa.Column("updated_at", ts, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_states")
