"""lightning: invoices issued, payments sent, the listener cursor

Revision ID: 0005_lightning
Revises: 0004_payouts
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_lightning"
down_revision: str | None = "0004_payouts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "status IN ('pending','in_flight','unknown','succeeded')"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(39, 0)
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "ln_invoices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("wallet_id", sa.String(40), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("payment_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("bolt11", sa.Text, nullable=False),
        sa.Column("amount_msat", amount),
        sa.Column("description", sa.String(640), nullable=False),
        sa.Column("description_hash", sa.String(64)),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("paid_msat", amount),
        sa.Column("internal", sa.Boolean, nullable=False),
        sa.Column("paid_at", ts),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.CheckConstraint("status IN ('open','paid','expired','canceled')",
                           name=op.f("ck_ln_invoices_status")),
        sa.CheckConstraint("amount_msat IS NULL OR amount_msat > 0",
                           name=op.f("ck_ln_invoices_amount")),
        sa.CheckConstraint("(status = 'paid') = (paid_msat IS NOT NULL)",
                           name=op.f("ck_ln_invoices_paid")),
    )
    op.create_index("ix_ln_invoices_wallet_id", "ln_invoices", ["wallet_id"])
    op.create_index("ix_ln_invoices_open", "ln_invoices", ["status", "expires_at"])
    op.create_table(
        "ln_payments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("withdrawal_id", sa.String(40), sa.ForeignKey("withdrawals.id"),
                  nullable=False),
        sa.Column("payment_hash", sa.String(64), nullable=False),
        sa.Column("bolt11", sa.Text, nullable=False),
        sa.Column("amountless", sa.Boolean, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("amount_msat", amount, nullable=False),
        sa.Column("fee_limit_msat", amount, nullable=False),
        sa.Column("fee_msat", amount),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("preimage", sa.String(64)),
        sa.Column("failure_reason", sa.String(120)),
        sa.Column("next_try_at", ts),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.UniqueConstraint("payment_hash", "attempt", name="uq_ln_payments_hash_attempt"),
        sa.UniqueConstraint("withdrawal_id", "attempt", name="uq_ln_payments_withdrawal_attempt"),
        sa.CheckConstraint(
            "status IN ('pending','in_flight','unknown','succeeded','failed','retry')",
            name=op.f("ck_ln_payments_status")),
        sa.CheckConstraint("amount_msat > 0 AND fee_limit_msat >= 0",
                           name=op.f("ck_ln_payments_amounts")),
    )
    op.create_index("ix_ln_payments_withdrawal_id", "ln_payments", ["withdrawal_id"])
    # Never two live payments of one invoice from here, enforced by the database.
    op.create_index("uq_ln_payments_live_hash", "ln_payments", ["payment_hash"], unique=True,
                    postgresql_where=sa.text(LIVE), sqlite_where=sa.text(LIVE))
    op.create_table(
        "ln_cursors",
        sa.Column("node", sa.String(40), primary_key=True),
        sa.Column("settle_index", sa.Integer, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )


def downgrade() -> None:
    for t in ("ln_cursors", "ln_payments", "ln_invoices"):
        op.drop_table(t)
