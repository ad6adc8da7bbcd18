"""the rules engine (issue 12): risk_rule_sets, risk_decisions, risk_cases,
risk_address_labels; withdrawals may be held in ``review``

Revision ID: 0020_risk (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_risk"
down_revision: str | None = "0019_withdrawal_policy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONE_LIVE = "status = 'live'"
# As 0019_withdrawal_policy left them (awaiting_approval included).
_STATUSES = "'pending','awaiting_approval','batched','broadcast','confirmed','failed','cancelled'"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(39, 0)
    bigint = sa.Integer() if sqlite else sa.BigInteger()
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "risk_rule_sets",
        sa.Column("version", bigint, primary_key=True, autoincrement=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("rules", sa.Text, nullable=False),
        sa.Column("note", sa.String(500), nullable=False, server_default=""),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("approved_by", sa.String(80), nullable=True),
        sa.Column("approved_at", ts, nullable=True),
        sa.CheckConstraint("status IN ('draft','live','retired')",
                           name=op.f("ck_risk_rule_sets_status")),
        # A live set was approved by someone other than its author.
        sa.CheckConstraint("status = 'draft' OR (approved_by IS NOT NULL "
                           "AND approved_by <> created_by)",
                           name=op.f("ck_risk_rule_sets_second_admin")),
    )
    op.create_index("uq_risk_rule_sets_one_live", "risk_rule_sets", ["status"], unique=True,
                    sqlite_where=sa.text(_ONE_LIVE), postgresql_where=sa.text(_ONE_LIVE))
    op.create_table(
        "risk_decisions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("at", ts, nullable=False),
        sa.Column("wallet_id", sa.String(40), nullable=False),
        sa.Column("subject_type", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(128), nullable=True),
        sa.Column("rule_set_version", bigint,
                  sa.ForeignKey("risk_rule_sets.version"), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("sanctioned", sa.Boolean, nullable=False),
        sa.Column("amount_msat", amount, nullable=False),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("results", sa.Text, nullable=False),
        sa.CheckConstraint("outcome IN ('approve','review','reject')",
                           name=op.f("ck_risk_decisions_outcome")),
    )
    op.create_index("ix_risk_decisions_at", "risk_decisions", ["at"])
    op.create_index("ix_risk_decisions_wallet_id", "risk_decisions", ["wallet_id"])
    op.create_index("ix_risk_decisions_subject_id", "risk_decisions", ["subject_id"])
    op.create_table(
        "risk_cases",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("decision_id", sa.String(40), sa.ForeignKey("risk_decisions.id"),
                  nullable=False),
        sa.Column("wallet_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.CheckConstraint("status IN ('pending','investigating','closed')",
                           name=op.f("ck_risk_cases_status")),
    )
    op.create_index("ix_risk_cases_decision_id", "risk_cases", ["decision_id"])
    op.create_index("ix_risk_cases_wallet_id", "risk_cases", ["wallet_id"])
    op.create_table(
        "risk_address_labels",
        sa.Column("id", bigint, primary_key=True, autoincrement=True),
        sa.Column("address", sa.String(200), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("source", sa.String(120), nullable=False, server_default=""),
        sa.Column("first_seen_at", ts, nullable=True),
        sa.Column("loaded_at", ts, nullable=False),
    )
    op.create_index("uq_risk_address_labels", "risk_address_labels", ["address", "label"],
                    unique=True)
    # Features read the account's withdrawals by time and destination.
    op.create_index("ix_withdrawals_wallet_created", "withdrawals", ["wallet_id", "created_at"])
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_constraint(op.f("ck_withdrawals_status"), type_="check")
        batch.create_check_constraint(op.f("ck_withdrawals_status"),
                                      f"status IN ({_STATUSES},'review')")
        # A withdrawal held for review has no batch, like a pending one.
        batch.drop_constraint(op.f("ck_withdrawals_batch"), type_="check")
        batch.create_check_constraint(
            op.f("ck_withdrawals_batch"),
            "method <> 'onchain' OR (status IN ('pending','awaiting_approval','review')) = "
            "(batch_id IS NULL) OR status IN ('failed','cancelled')")


def downgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_constraint(op.f("ck_withdrawals_status"), type_="check")
        batch.create_check_constraint(op.f("ck_withdrawals_status"), f"status IN ({_STATUSES})")
        batch.drop_constraint(op.f("ck_withdrawals_batch"), type_="check")
        batch.create_check_constraint(
            op.f("ck_withdrawals_batch"),
            "method <> 'onchain' OR (status IN ('pending','awaiting_approval')) = "
            "(batch_id IS NULL) OR status IN ('failed','cancelled')")
    op.drop_index("ix_withdrawals_wallet_created", "withdrawals")
    op.drop_table("risk_address_labels")
    op.drop_table("risk_cases")
    op.drop_table("risk_decisions")
    op.drop_table("risk_rule_sets")
