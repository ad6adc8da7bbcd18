"""the node's index of a failed Lightning attempt, and when an attempt was sent

A node keeps one record per payment hash, the last attempt's. Once an attempt failed, a
FAILED record read for the next one may still be the first's (found from outside: a retry
whose send was lost on the way was failed on it, and the node then paid it), or the next
one's own failure. ``ln_payments.node_index``: the node's index of the record an attempt
failed on (LND's payment index, which a new attempt of the hash replaces), so the payer
tells the two apart; ``ln_payments.sent_at``: when the payer last handed the attempt to the
node, from which a send lost on the way is given up (found from outside: counted from the
row's creation, an attempt that waited an hour to be sent was released at its first look).

Revision ID: 0084_ln_payment_node_index
Revises: 0083_takes_end_with_payments
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0084_ln_payment_node_index"
down_revision: str | None = "0083_takes_end_with_payments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ln_payments") as batch:
        batch.add_column(sa.Column("node_index", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ln_payments") as batch:
        batch.drop_column("sent_at")
        batch.drop_column("node_index")
