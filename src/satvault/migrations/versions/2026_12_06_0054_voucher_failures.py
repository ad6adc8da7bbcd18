"""lnurl_voucher_failures: the withdrawals of a withdraw voucher that definitely failed, after
which the voucher was opened again (its hold placed anew); the voucher's ``withdrawal_id`` is
cleared then (an open voucher has none), and this is where its failed withdrawals stay. One
row per withdrawal (the primary key): a withdrawal fails once, so a voucher reopens once for
it.

Revision ID: 0054_voucher_failures
Revises: 0053_held_velocity
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0054_voucher_failures"
down_revision: str | None = "0053_held_velocity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lnurl_voucher_failures",
        sa.Column("withdrawal_id", sa.String(40), sa.ForeignKey("withdrawals.id"),
                  primary_key=True),
        sa.Column("voucher_id", sa.String(40), sa.ForeignKey("lnurl_withdraw_vouchers.id"),
                  nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lnurl_voucher_failures_voucher_id", "lnurl_voucher_failures",
                    ["voucher_id"])


def downgrade() -> None:
    op.drop_table("lnurl_voucher_failures")
