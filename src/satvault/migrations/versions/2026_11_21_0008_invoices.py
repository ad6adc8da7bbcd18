"""invoices: store invoices; Lightning invoices know the store invoice they belong to

Revision ID: 0008_invoices
Revises: 0007_events
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_invoices"
down_revision: str | None = "0007_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(39, 0)
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "store_invoices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("store_id", sa.String(40), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("wallet_id", sa.String(40), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("additional_status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("amount", sa.String(40), nullable=False),
        sa.Column("amount_minor", amount, nullable=False),
        sa.Column("due_msat", amount, nullable=False),
        sa.Column("rate_minor_per_btc", amount),
        sa.Column("rate_source", sa.String(40)),
        sa.Column("rate_at", ts),
        sa.Column("order_id", sa.String(120)),
        sa.Column("metadata_json", sa.Text, nullable=False),
        sa.Column("payment_methods", sa.String(40), nullable=False),
        sa.Column("speed_policy", sa.Integer, nullable=False),
        sa.Column("tolerance_bp", sa.Integer, nullable=False),
        sa.Column("redirect_url", sa.String(2000)),
        sa.Column("deposit_id", sa.String(40), sa.ForeignKey("deposit_requests.id")),
        sa.Column("confirmed_msat", amount, nullable=False),
        sa.Column("seen_msat", amount, nullable=False),
        sa.Column("full_seen_at", ts),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("settled_at", ts),
        sa.UniqueConstraint("deposit_id", name="uq_store_invoices_deposit"),
        sa.CheckConstraint("status IN ('new','processing','settled','expired','invalid')",
                           name=op.f("ck_store_invoices_status")),
        sa.CheckConstraint("additional_status IN ('none','paid_partial','paid_over','paid_late',"
                           "'marked')", name=op.f("ck_store_invoices_additional")),
        sa.CheckConstraint("due_msat > 0 AND amount_minor > 0",
                           name=op.f("ck_store_invoices_amounts")),
        sa.CheckConstraint("speed_policy IN (0, 1, 2, 6)", name=op.f("ck_store_invoices_speed")),
        sa.CheckConstraint("tolerance_bp BETWEEN 0 AND 10000",
                           name=op.f("ck_store_invoices_tolerance")),
        sa.CheckConstraint("confirmed_msat >= 0 AND seen_msat >= confirmed_msat",
                           name=op.f("ck_store_invoices_paid")),
    )
    op.create_index("ix_store_invoices_store_id", "store_invoices", ["store_id", "created_at"])
    op.create_index("ix_store_invoices_order_id", "store_invoices", ["order_id"])
    op.create_index("ix_store_invoices_open", "store_invoices", ["status", "expires_at"])
    with op.batch_alter_table("ln_invoices") as batch:
        batch.add_column(sa.Column("store_invoice_id", sa.String(40)))
    with op.batch_alter_table("withdrawals") as batch:
        batch.add_column(sa.Column("store_id", sa.String(40)))
        batch.add_column(sa.Column("invoice_id", sa.String(40)))
    op.create_index("ix_withdrawals_invoice_id", "withdrawals", ["invoice_id"])
    with op.batch_alter_table("stores") as batch:
        batch.add_column(sa.Column("spread_bp", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.create_check_constraint(op.f("ck_stores_spread"), "spread_bp BETWEEN 0 AND 2000")
    op.create_index("ix_ln_invoices_store_invoice_id", "ln_invoices", ["store_invoice_id"])


def downgrade() -> None:
    op.drop_index("ix_withdrawals_invoice_id", "withdrawals")
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_column("invoice_id")
        batch.drop_column("store_id")
    with op.batch_alter_table("stores") as batch:
        batch.drop_constraint(op.f("ck_stores_spread"), type_="check")
        batch.drop_column("spread_bp")
    op.drop_index("ix_ln_invoices_store_invoice_id", "ln_invoices")
    with op.batch_alter_table("ln_invoices") as batch:
        batch.drop_column("store_invoice_id")
    op.drop_table("store_invoices")
