"""invoice checks: when each store invoice must next be looked at, and indexes that let the
refresher find invoices whose payments changed without scanning every open invoice

Revision ID: 0009_invoice_checks
Revises: 0008_invoices
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_invoice_checks"
down_revision: str | None = "0008_invoices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("store_invoices") as batch:
        batch.add_column(sa.Column("next_check_at", sa.DateTime(timezone=True)))
    # Every invoice not marked by its merchant is looked at once more; that check sets the
    # real next deadline (or none, once the monitoring window is over).
    op.execute("UPDATE store_invoices SET next_check_at = updated_at "
               "WHERE additional_status <> 'marked'")
    op.create_index("ix_store_invoices_next_check_at", "store_invoices", ["next_check_at"])
    op.create_index("ix_onchain_payments_updated_at", "onchain_payments", ["updated_at"])
    op.create_index("ix_ln_invoices_paid_at", "ln_invoices", ["paid_at"])


def downgrade() -> None:
    op.drop_index("ix_ln_invoices_paid_at", "ln_invoices")
    op.drop_index("ix_onchain_payments_updated_at", "onchain_payments")
    op.drop_index("ix_store_invoices_next_check_at", "store_invoices")
    with op.batch_alter_table("store_invoices") as batch:
        batch.drop_column("next_check_at")
