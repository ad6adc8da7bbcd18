"""Custody (issue 11): a batch says what it moves (payout, sweep, refill); a refill waits for
offline cosigners (``cosigning``) and keeps their merged partial signatures; at most one live
sweep and one live refill

Revision ID: 0015_custody
Revises: 0014_deposit_store_invoice
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_custody"
down_revision: str | None = "0014_deposit_store_invoice"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONE_LIVE = ("kind IN ('sweep','refill') AND status IN "
             "('cosigning','signing','signed','broadcast')")


def upgrade() -> None:
    with op.batch_alter_table("payout_batches") as batch:
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False,
                                   server_default="payout"))
        batch.add_column(sa.Column("partial_psbt", sa.Text, nullable=True))
        batch.drop_constraint(op.f("ck_payout_batches_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_payout_batches_status"),
            "status IN ('cosigning','signing','signed','broadcast','confirmed','abandoned',"
            "'stuck')")
        batch.create_check_constraint(op.f("ck_payout_batches_kind"),
                                      "kind IN ('payout','sweep','refill')")
    op.create_index("uq_payout_batches_one_live_move", "payout_batches", ["kind"], unique=True,
                    sqlite_where=sa.text(_ONE_LIVE), postgresql_where=sa.text(_ONE_LIVE))


def downgrade() -> None:
    op.drop_index("uq_payout_batches_one_live_move", table_name="payout_batches")
    with op.batch_alter_table("payout_batches") as batch:
        batch.drop_constraint(op.f("ck_payout_batches_kind"), type_="check")
        batch.drop_constraint(op.f("ck_payout_batches_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_payout_batches_status"),
            "status IN ('signing','signed','broadcast','confirmed','abandoned','stuck')")
        batch.drop_column("partial_psbt")
        batch.drop_column("kind")
