"""the event relay on the shared lease (issue 13 §4, §5): the relay to NATS JetStream now runs
as a singleton worker under ``worker_leases`` (expiry, epoch, fenced writes), so
``event_relay_cursors`` keeps only its cursor; its own lease columns (``owner``,
``lease_until``) go

Revision ID: 0032_relay_on_worker_lease (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0032_relay_on_worker_lease"
down_revision: str | None = "0029_web_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("event_relay_cursors") as batch:
        batch.drop_constraint(op.f("ck_event_relay_cursors_lease"), type_="check")
        batch.drop_column("lease_until")
        batch.drop_column("owner")


def downgrade() -> None:
    with op.batch_alter_table("event_relay_cursors") as batch:
        batch.add_column(sa.Column("owner", sa.String(80)))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True)))
        batch.create_check_constraint(op.f("ck_event_relay_cursors_lease"),
                                      "(owner IS NULL) = (lease_until IS NULL)")
