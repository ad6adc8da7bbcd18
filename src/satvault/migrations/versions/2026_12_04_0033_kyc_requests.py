"""the KYC review queue (issue 14 §3): kyc_requests, an owner's request for a higher tier,
pending until an operator decides it; the decision is a kyc_records row (the history),
linked here

Revision ID: 0033_kyc_requests (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0033_kyc_requests"
down_revision: str | None = "0032_relay_on_worker_lease"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "kyc_requests",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_type", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("tier", sa.Integer, nullable=False),
        sa.Column("full_name", sa.String(200), nullable=False),
        sa.Column("documents", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("requested_by", sa.String(80), nullable=False),
        sa.Column("requested_at", ts, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("record_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("kyc_records.id", name="fk_kyc_requests_record"),
                  nullable=True),
        sa.Column("decided_by", sa.String(80), nullable=True),
        sa.Column("decided_at", ts, nullable=True),
        sa.CheckConstraint("owner_type IN ('user', 'merchant')",
                           name=op.f("ck_kyc_requests_owner_type")),
        sa.CheckConstraint("tier >= 0", name=op.f("ck_kyc_requests_tier")),
        sa.CheckConstraint("status IN ('pending', 'approved', 'rejected', 'blocked')",
                           name=op.f("ck_kyc_requests_status")),
        # Decided exactly when a record (and who, when) is linked.
        sa.CheckConstraint(
            "(status = 'pending') = (record_id IS NULL AND decided_by IS NULL "
            "AND decided_at IS NULL)", name=op.f("ck_kyc_requests_decided")),
        sa.UniqueConstraint("record_id", name="uq_kyc_requests_record"),
    )
    op.create_index("ix_kyc_requests_status", "kyc_requests", ["status", "requested_at"])
    op.create_index("ix_kyc_requests_owner", "kyc_requests", ["owner_type", "owner_id"])
    # One pending request per owner at a time.
    op.create_index("uq_kyc_requests_pending", "kyc_requests", ["owner_type", "owner_id"],
                    unique=True, postgresql_where=sa.text("status = 'pending'"),
                    sqlite_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_index("uq_kyc_requests_pending", table_name="kyc_requests")
    op.drop_index("ix_kyc_requests_owner", table_name="kyc_requests")
    op.drop_index("ix_kyc_requests_status", table_name="kyc_requests")
    op.drop_table("kyc_requests")
