"""deposit_requests.store_invoice_id (issue 10): the store invoice a deposit request belongs
to, carried on the deposit as ln_invoices carries it, so the chain watcher learns it from its
own tables while it settles a payment (the on-chain package no longer reads store invoices)

Revision ID: 0014_deposit_store_invoice
Revises: 0013_ln_invoices_bolt11
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_deposit_store_invoice"
down_revision: str | None = "0013_ln_invoices_bolt11"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deposit_requests") as batch:
        batch.add_column(sa.Column("store_invoice_id", sa.String(40), nullable=True))
    op.execute("UPDATE deposit_requests SET store_invoice_id = (SELECT s.id FROM store_invoices s "
               "WHERE s.deposit_id = deposit_requests.id)")


def downgrade() -> None:
    with op.batch_alter_table("deposit_requests") as batch:
        batch.drop_column("store_invoice_id")
