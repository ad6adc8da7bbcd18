"""lnurl_withdraw_vouchers.expires_at: an optional expiry given at creation; past it the
voucher refuses redemption and the hold-expiry worker marks it ``expired`` and releases its
hold (a new status, closed like ``used`` and ``canceled``). Vouchers from before keep no
expiry.

Revision ID: 0055_voucher_expiry
Revises: 0054_voucher_failures
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0055_voucher_expiry"
down_revision: str | None = "0054_voucher_failures"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = "'open','used','canceled','expired'"
_OLD_STATUSES = "'open','used','canceled'"


def upgrade() -> None:
    with op.batch_alter_table("lnurl_withdraw_vouchers") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True)))
        batch.drop_constraint(op.f("ck_lnurl_withdraw_vouchers_status"), type_="check")
        batch.create_check_constraint(op.f("ck_lnurl_withdraw_vouchers_status"),
                                      f"status IN ({_STATUSES})")
        batch.create_check_constraint(op.f("ck_lnurl_withdraw_vouchers_expires_at"),
                                      "expires_at IS NULL OR expires_at > created_at")
    # The sweep's search: open vouchers past their expiry (few rows carry one).
    op.create_index("ix_lnurl_withdraw_vouchers_expires_at", "lnurl_withdraw_vouchers",
                    ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_lnurl_withdraw_vouchers_expires_at", "lnurl_withdraw_vouchers")
    # An expired voucher's hold is released: it reads as cancelled before this revision.
    op.execute("UPDATE lnurl_withdraw_vouchers SET status = 'canceled' "
               "WHERE status = 'expired'")
    with op.batch_alter_table("lnurl_withdraw_vouchers") as batch:
        batch.drop_constraint(op.f("ck_lnurl_withdraw_vouchers_expires_at"), type_="check")
        batch.drop_constraint(op.f("ck_lnurl_withdraw_vouchers_status"), type_="check")
        batch.create_check_constraint(op.f("ck_lnurl_withdraw_vouchers_status"),
                                      f"status IN ({_OLD_STATUSES})")
        batch.drop_column("expires_at")
