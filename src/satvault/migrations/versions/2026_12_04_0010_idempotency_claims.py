"""idempotency claims are owned: a claim token written by the request that holds the key, and
a heartbeat it refreshes while it runs; only a claim whose heartbeat stopped may be taken over

Revision ID: 0010_idempotency_claims
Revises: 0009_invoice_checks
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_idempotency_claims"
down_revision: str | None = "0009_invoice_checks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(32)))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True)))
    op.execute("UPDATE idempotency_keys SET heartbeat_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("claim_token")
