"""audit_anchors (issue 12 §6): heads of the audit chain committed on chain in a sweep's
OP_RETURN: requested → planned (the sweep's batch) → confirmed (txid, block height).

Revision ID: 0023_audit_anchors (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023_audit_anchors"
down_revision: str | None = "0022_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    bigint = sa.Integer() if sqlite else sa.BigInteger()
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "audit_anchors",
        sa.Column("id", bigint, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("requested_by", sa.String(80), nullable=False),
        sa.Column("requested_at", ts, nullable=False),
        sa.Column("batch_id", sa.String(40), sa.ForeignKey("payout_batches.id"),
                  nullable=True),
        sa.Column("txid", sa.String(64), nullable=True),
        sa.Column("block_height", sa.Integer, nullable=True),
        sa.Column("confirmed_at", ts, nullable=True),
        sa.CheckConstraint("status IN ('requested','planned','confirmed','superseded')",
                           name=op.f("ck_audit_anchors_status")),
        sa.CheckConstraint("seq > 0", name=op.f("ck_audit_anchors_seq")),
        # In a sweep exactly when planned or confirmed; a txid and block once confirmed.
        sa.CheckConstraint("(batch_id IS NOT NULL) = (status IN ('planned','confirmed'))",
                           name=op.f("ck_audit_anchors_batch")),
        sa.CheckConstraint("(status = 'confirmed') = (txid IS NOT NULL "
                           "AND block_height IS NOT NULL)",
                           name=op.f("ck_audit_anchors_confirmed")),
    )
    op.create_index("ix_audit_anchors_seq", "audit_anchors", ["seq"])
    op.create_index("ix_audit_anchors_batch_id", "audit_anchors", ["batch_id"])
    op.create_index("ix_audit_anchors_txid", "audit_anchors", ["txid"])


def downgrade() -> None:
    op.drop_table("audit_anchors")
