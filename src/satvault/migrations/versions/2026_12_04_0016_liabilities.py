"""liability_rounds and liability_proofs (issue 11, proof of liabilities): each published
Merkle-sum root, and each wallet's proof in it, so the API serves a customer the latest one

Revision ID: 0016_liabilities (its parent: down_revision below)
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_liabilities"
down_revision: str | None = "0015_custody"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(39, 0)
    # The tree's sums are unsigned 64-bit; SQLite's integers stop at 2**63 - 1 (the ledger's
    # own limit there).
    top = 2**63 - 1 if sqlite else 2**64 - 1
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "liability_rounds",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("asset", sa.String(16), nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("total_msat", amount, nullable=False),
        sa.Column("leaves", sa.Integer, nullable=False),
        sa.Column("accounts", sa.Integer, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.UniqueConstraint("root", name="uq_liability_rounds_root"),
        sa.CheckConstraint("height >= 0", name=op.f("ck_liability_rounds_height")),
        sa.CheckConstraint("length(root) = 64", name=op.f("ck_liability_rounds_root_hex")),
        sa.CheckConstraint(f"total_msat >= 0 AND total_msat <= {top}",
                           name=op.f("ck_liability_rounds_total")),
        # a power of two, at least one
        sa.CheckConstraint("leaves >= 1 AND (leaves & (leaves - 1)) = 0",
                           name=op.f("ck_liability_rounds_leaves")),
        sa.CheckConstraint("accounts >= 0 AND accounts <= leaves",
                           name=op.f("ck_liability_rounds_accounts")),
    )
    op.create_index("ix_liability_rounds_created_at", "liability_rounds", ["created_at"])
    op.create_table(
        "liability_proofs",
        sa.Column("round_id", sa.String(40),
                  sa.ForeignKey("liability_rounds.id", ondelete="CASCADE"), nullable=False),
        sa.Column("wallet_id", sa.String(40), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("balance_msat", amount, nullable=False),
        sa.Column("proof", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("round_id", "wallet_id", name="pk_liability_proofs"),
        sa.CheckConstraint(f"balance_msat > 0 AND balance_msat <= {top}",
                           name=op.f("ck_liability_proofs_balance")),
    )


def downgrade() -> None:
    op.drop_table("liability_proofs")
    op.drop_index("ix_liability_rounds_created_at", "liability_rounds")
    op.drop_table("liability_rounds")
