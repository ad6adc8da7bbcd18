"""an index on ln_invoices.bolt11 (issue 10): a BOLT11 a client pays is looked up as one of
our own invoices before it is decoded; a hash index on PostgreSQL (equality is all the lookup
needs, and a long invoice cannot exceed a B-tree's key size)

Revision ID: 0013_ln_invoices_bolt11
Revises: 0012_address_pool
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013_ln_invoices_bolt11"
down_revision: str | None = "0012_address_pool"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_ln_invoices_bolt11", "ln_invoices", ["bolt11"],
                    postgresql_using="hash")


def downgrade() -> None:
    op.drop_index("ix_ln_invoices_bolt11", "ln_invoices")
