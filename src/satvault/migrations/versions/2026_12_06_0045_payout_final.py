"""payout_batches.final_at: a confirmed move (payout, sweep, refill) is watched for a reorg
until it is ``payout_final_confirmations`` deep, then marked final and never looked at again
(a payout reorged out after it was booked was not tracked again: if its transaction never
returned to the chain, nobody was told). A partial index holds the moves still watched.

Moves confirmed before this migration are marked final (at their last update): watching a
long history would cost the first pass one node lookup per move, with payouts waiting behind
it. Only a move confirmed in the last blocks before the upgrade goes unwatched.

Revision ID: 0045_payout_final
Revises: 0044_coinbase_payments
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0045_payout_final"
down_revision: str | None = "0044_coinbase_payments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WATCHED = "status = 'confirmed' AND final_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("payout_batches") as batch:
        batch.add_column(sa.Column("final_at", sa.DateTime(timezone=True)))
    op.create_index("ix_payout_batches_watched", "payout_batches", ["created_at"],
                    sqlite_where=sa.text(_WATCHED), postgresql_where=sa.text(_WATCHED))
    op.execute("UPDATE payout_batches SET final_at = updated_at WHERE status = 'confirmed'")


def downgrade() -> None:
    op.drop_index("ix_payout_batches_watched", table_name="payout_batches")
    with op.batch_alter_table("payout_batches") as batch:
        batch.drop_column("final_at")
