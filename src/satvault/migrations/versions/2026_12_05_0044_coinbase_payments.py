"""onchain_payments.is_coinbase: whether a payment is an output of a block's coinbase
transaction, which consensus lets nobody spend before it has 100 confirmations (a coinbase
paying a deposit address was credited after the usual confirmations and then put in a sweep
the node refused, abandoned and planned again with the same coin at every step)

Every payment recorded before this migration is an ordinary one: the column defaults to false.

Revision ID: 0044_coinbase_payments
Revises: 0043_fold_range
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0044_coinbase_payments"
down_revision: str | None = "0043_fold_range"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("onchain_payments") as batch:
        batch.add_column(sa.Column("is_coinbase", sa.Boolean, nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("onchain_payments") as batch:
        batch.drop_column("is_coinbase")
