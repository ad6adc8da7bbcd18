"""the store-invoice hot path (issue 10): a partial index over the deposit address pool (the
look-ahead rows a request claims with one statement), and the webhook fan-out moved from the
request to the dispatcher (``outbox_events.fanout``: 'pending' until the dispatcher has
created the event's deliveries)

Revision ID: 0011_hot_path_pools
Revises: 0010_idempotency_claims
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_hot_path_pools"
down_revision: str | None = "0010_idempotency_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POOLED = "status = 'lookahead'"
PENDING = "fanout = 'pending'"


def upgrade() -> None:
    op.create_index("ix_onchain_addresses_pool", "onchain_addresses",
                    ["wallet_id", "chain", "idx"], sqlite_where=sa.text(POOLED),
                    postgresql_where=sa.text(POOLED))
    # Existing events were fanned out when they were written: NULL (nothing to do).
    with op.batch_alter_table("outbox_events") as batch:
        batch.add_column(sa.Column("fanout", sa.String(8)))
        batch.create_check_constraint(op.f("ck_outbox_events_fanout"), "fanout IN ('pending', 'done')")
    op.create_index("ix_outbox_events_fanout", "outbox_events", ["id"],
                    sqlite_where=sa.text(PENDING), postgresql_where=sa.text(PENDING))


def downgrade() -> None:
    op.drop_index("ix_outbox_events_fanout", "outbox_events")
    with op.batch_alter_table("outbox_events") as batch:
        batch.drop_constraint(op.f("ck_outbox_events_fanout"), type_="check")
        batch.drop_column("fanout")
    op.drop_index("ix_onchain_addresses_pool", "onchain_addresses")
