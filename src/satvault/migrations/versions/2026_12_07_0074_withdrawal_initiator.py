"""Who asked for a withdrawal held for review, for the approvers once it is released

A withdrawal the risk rules held for review goes to the withdrawal policy only when its case
releases it; the policy then excluded the wallet's owner as the initiator, not the person
who asked (found from outside: an admin withdrawing from a customer's wallet, held for
review, approved the withdrawal themselves after its release). ``initiator`` keeps who asked
(a user id, null when nobody stands behind the key).

Revision ID: 0074_withdrawal_initiator
Revises: 0073_webhook_switched
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0074_withdrawal_initiator"
down_revision: str | None = "0073_webhook_switched"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch:
        batch.add_column(sa.Column("initiator", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch:
        batch.drop_column("initiator")
