"""approver-group membership changes need a second admin (issue 14 §3, four eyes): a member
added to or removed from an approver group is a proposal in ``approver_group_changes``,
applied only when an admin other than its proposer approves it

Revision ID: 0036_approver_group_changes
Revises: 0035_risk_features_function
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0036_approver_group_changes"
down_revision: str | None = "0035_risk_features_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "approver_group_changes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("group_name", sa.String(60), nullable=False),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("proposed_by", sa.String(40), nullable=False),
        sa.Column("decided_by", sa.String(40)),
        sa.Column("reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("decided_at", ts),
        sa.CheckConstraint("status IN ('pending','approved','rejected')",
                           name=op.f("ck_approver_group_changes_status")),
        sa.CheckConstraint("action IN ('add','remove')",
                           name=op.f("ck_approver_group_changes_action")),
        # Four eyes: whoever decides is not whoever proposed.
        sa.CheckConstraint("decided_by IS NULL OR decided_by <> proposed_by",
                           name=op.f("ck_approver_group_changes_four_eyes")),
        # Decided (by someone, at some time) exactly when no longer pending.
        sa.CheckConstraint(
            "(status = 'pending' AND decided_by IS NULL AND decided_at IS NULL) OR "
            "(status <> 'pending' AND decided_by IS NOT NULL AND decided_at IS NOT NULL)",
            name=op.f("ck_approver_group_changes_decided")),
    )
    # At most one pending change per member of a group.
    op.create_index("uq_approver_group_changes_pending", "approver_group_changes",
                    ["group_name", "user_id"], unique=True,
                    sqlite_where=sa.text("status = 'pending'"),
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_approver_group_changes_status", "approver_group_changes",
                    ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_approver_group_changes_status", table_name="approver_group_changes")
    op.drop_index("uq_approver_group_changes_pending", table_name="approver_group_changes")
    op.drop_table("approver_group_changes")
