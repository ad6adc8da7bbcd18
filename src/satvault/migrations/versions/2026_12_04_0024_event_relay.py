"""the event stream (issue 13 §5): event_relay_cursors, how far the relay to NATS JetStream
has published the outbox, and who holds its lease

Revision ID: 0024_event_relay (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024_event_relay"
down_revision: str | None = "0023_audit_anchors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    bigint = sa.Integer() if sqlite else sa.BigInteger()
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "event_relay_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", bigint, nullable=False),
        sa.Column("owner", sa.String(80)),
        sa.Column("lease_until", ts),
        sa.Column("updated_at", ts, nullable=False),
        sa.CheckConstraint("position >= 0", name=op.f("ck_event_relay_cursors_position")),
        sa.CheckConstraint("(owner IS NULL) = (lease_until IS NULL)",
                           name=op.f("ck_event_relay_cursors_lease")),
    )


def downgrade() -> None:
    op.drop_table("event_relay_cursors")
