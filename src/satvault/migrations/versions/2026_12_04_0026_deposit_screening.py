"""deposit screening (issue 12 §1): a wallet's frozen sub-balance (``wallets.frozen_ledger_
account_id``) and ``risk_frozen_deposits``, the deposits credited to it

Revision ID: 0026_deposit_screening (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026_deposit_screening"
down_revision: str | None = "0025_risk_cases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(39, 0)
    bigint = sa.Integer() if sqlite else sa.BigInteger()
    ts = sa.DateTime(timezone=True)
    with op.batch_alter_table("wallets") as batch:
        batch.add_column(sa.Column("frozen_ledger_account_id", bigint, nullable=True))
        batch.create_foreign_key(op.f("fk_wallets_frozen_ledger_account_id_ledger_accounts"),
                                 "ledger_accounts", ["frozen_ledger_account_id"], ["id"])
    op.create_table(
        "risk_frozen_deposits",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("decision_id", sa.String(40), sa.ForeignKey("risk_decisions.id"),
                  nullable=False, unique=True),
        sa.Column("case_id", sa.String(40), nullable=True),
        sa.Column("wallet_id", sa.String(40), nullable=False),
        sa.Column("rail", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(128), nullable=False),
        sa.Column("credit_id", sa.String(128), nullable=False, unique=True),
        sa.Column("amount_msat", amount, nullable=False),
        sa.Column("frozen_account_id", bigint, sa.ForeignKey("ledger_accounts.id"),
                  nullable=False),
        sa.Column("wallet_account_id", bigint, sa.ForeignKey("ledger_accounts.id"),
                  nullable=False),
        sa.Column("sanctioned", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(80), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.CheckConstraint("status IN ('frozen','released','blocked','reversed')",
                           name=op.f("ck_risk_frozen_deposits_status")),
        sa.CheckConstraint("amount_msat >= 0", name=op.f("ck_risk_frozen_deposits_amount")),
    )
    op.create_index("ix_risk_frozen_deposits_wallet_id", "risk_frozen_deposits", ["wallet_id"])
    op.create_index("ix_risk_frozen_deposits_subject_id", "risk_frozen_deposits",
                    ["subject_id"])


def downgrade() -> None:
    op.drop_table("risk_frozen_deposits")
    with op.batch_alter_table("wallets") as batch:
        batch.drop_constraint(op.f("fk_wallets_frozen_ledger_account_id_ledger_accounts"),
                              type_="foreignkey")
        batch.drop_column("frozen_ledger_account_id")
