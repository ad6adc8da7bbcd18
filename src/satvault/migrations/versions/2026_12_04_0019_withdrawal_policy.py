"""Withdrawal policy (issue 12 §4, maker-checker): the versioned policy, approver groups,
withdrawals awaiting approval and their approvals, each wallet's destination allow-list; a
withdrawal may now wait in ``awaiting_approval`` (holding its money, batched by nobody)

Revision ID: 0019_withdrawal_policy
Revises: 0018_kyc
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_withdrawal_policy"
down_revision: str | None = "0018_kyc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = "'pending','awaiting_approval','batched','broadcast','confirmed','failed','cancelled'"
_OLD_STATUSES = "'pending','batched','broadcast','confirmed','failed','cancelled'"


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    with op.batch_alter_table("withdrawals") as batch:
        batch.alter_column("status", type_=sa.String(20), existing_type=sa.String(12),
                           existing_nullable=False)
        batch.drop_constraint(op.f("ck_withdrawals_status"), type_="check")
        batch.create_check_constraint(op.f("ck_withdrawals_status"), f"status IN ({_STATUSES})")
        # Waiting for approval is not in a batch either.
        batch.drop_constraint(op.f("ck_withdrawals_batch"), type_="check")
        batch.create_check_constraint(
            op.f("ck_withdrawals_batch"),
            "method <> 'onchain' OR (status IN ('pending','awaiting_approval')) = "
            "(batch_id IS NULL) OR status IN ('failed','cancelled')")
    op.create_table(
        "withdrawal_policies",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("rules", sa.Text, nullable=False),
        sa.Column("proposed_by", sa.String(40), nullable=False),
        sa.Column("proposed_at", ts, nullable=False),
        sa.Column("approved_by", sa.String(40)),
        sa.Column("approved_at", ts),
        sa.CheckConstraint("status IN ('proposed','live','superseded','withdrawn')",
                           name=op.f("ck_withdrawal_policies_status")),
        sa.CheckConstraint("approved_by IS NULL OR approved_by <> proposed_by",
                           name=op.f("ck_withdrawal_policies_four_eyes")),
    )
    # At most one live version.
    op.create_index("uq_withdrawal_policies_live", "withdrawal_policies", ["status"],
                    unique=True, sqlite_where=sa.text("status = 'live'"),
                    postgresql_where=sa.text("status = 'live'"))
    op.create_table(
        "approver_groups",
        sa.Column("name", sa.String(60), primary_key=True),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_table(
        "approver_group_members",
        sa.Column("group_name", sa.String(60), sa.ForeignKey("approver_groups.name"),
                  primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("added_at", ts, nullable=False),
    )
    op.create_table(
        "withdrawal_approval_requests",
        sa.Column("withdrawal_id", sa.String(40), sa.ForeignKey("withdrawals.id"),
                  primary_key=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("policy_version", sa.Integer, nullable=False),
        sa.Column("rule", sa.String(80), nullable=False),
        sa.Column("group_name", sa.String(60), nullable=False),
        sa.Column("required", sa.Integer, nullable=False),
        sa.Column("initiator", sa.String(40)),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("decided_at", ts),
        sa.CheckConstraint("status IN ('awaiting','approved','rejected','expired')",
                           name=op.f("ck_withdrawal_approval_requests_status")),
        sa.CheckConstraint("required >= 1", name=op.f("ck_withdrawal_approval_requests_n")),
    )
    op.create_index("ix_withdrawal_approval_requests_due", "withdrawal_approval_requests",
                    ["status", "expires_at"])
    op.create_table(
        "withdrawal_approvals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("withdrawal_id", sa.String(40),
                  sa.ForeignKey("withdrawal_approval_requests.withdrawal_id"), nullable=False),
        sa.Column("approver", sa.String(40), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.UniqueConstraint("withdrawal_id", "approver", name="uq_withdrawal_approvals_once"),
        sa.CheckConstraint("decision IN ('approve','reject')",
                           name=op.f("ck_withdrawal_approvals_decision")),
    )
    op.create_table(
        "withdrawal_allowlist",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("wallet_id", sa.String(40), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("destination", sa.String(2000), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("label", sa.String(120), nullable=False),
        sa.Column("added_by", sa.String(40)),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("usable_after", ts, nullable=False),
        sa.UniqueConstraint("wallet_id", "destination", name="uq_withdrawal_allowlist_entry"),
        sa.CheckConstraint("kind IN ('address','node','lnurl')",
                           name=op.f("ck_withdrawal_allowlist_kind")),
    )


def downgrade() -> None:
    for t in ("withdrawal_allowlist", "withdrawal_approvals", "withdrawal_approval_requests",
              "approver_group_members", "approver_groups"):
        op.drop_table(t)
    op.drop_index("uq_withdrawal_policies_live", table_name="withdrawal_policies")
    op.drop_table("withdrawal_policies")
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_constraint(op.f("ck_withdrawals_batch"), type_="check")
        batch.create_check_constraint(
            op.f("ck_withdrawals_batch"),
            "method <> 'onchain' OR (status = 'pending') = (batch_id IS NULL) "
            "OR status IN ('failed','cancelled')")
        batch.drop_constraint(op.f("ck_withdrawals_status"), type_="check")
        batch.create_check_constraint(op.f("ck_withdrawals_status"),
                                      f"status IN ({_OLD_STATUSES})")
        batch.alter_column("status", type_=sa.String(12), existing_type=sa.String(20),
                           existing_nullable=False)
