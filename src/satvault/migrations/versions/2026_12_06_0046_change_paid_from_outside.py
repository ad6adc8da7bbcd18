"""onchain_payments.paid_from_outside: a payment to one of the platform's move addresses (a
payout's change, a sweep's or a refill's output) that no move of ours made. Such an address is
public once used and anyone may pay it; the payment was never booked (the payout job books
only its own moves) while the payout job spent the coin, a lasting reconciliation difference.
The watcher now books it like funding of the tier.

Payments recorded before this migration are marked from what is stored: every transaction of
ours was a version in ``payout_txs`` (the payout job broadcasts nothing else) and spent coins
the watcher recorded, so a payment to a move address whose transaction is neither was made
by someone else. The watcher books those at its next step.

Revision ID: 0046_change_paid_from_outside
Revises: 0045_payout_final
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0046_change_paid_from_outside"
down_revision: str | None = "0045_payout_final"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("onchain_payments") as batch:
        batch.add_column(sa.Column("paid_from_outside", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    op.execute(sa.text(
        "UPDATE onchain_payments SET paid_from_outside = :yes "
        "WHERE address_id IN (SELECT id FROM onchain_addresses "
        "                     WHERE purpose IN ('change', 'sweep', 'refill')) "
        "AND txid NOT IN (SELECT txid FROM payout_txs) "
        "AND txid NOT IN (SELECT spent_by FROM onchain_payments "
        "                 WHERE spent_by IS NOT NULL)").bindparams(yes=True))


def downgrade() -> None:
    with op.batch_alter_table("onchain_payments") as batch:
        batch.drop_column("paid_from_outside")
