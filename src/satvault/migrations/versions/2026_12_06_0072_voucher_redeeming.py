"""A withdraw voucher's redemption claims it before one of our invoices leaves the node

A voucher is single-use, but its claim was made in the redeeming transaction, after the
invoice it pays (when it is one of ours) was cancelled on the node. Whoever held a link could
call its callback many times at once with other people's invoices: one redemption won, and
each loser had cancelled an invoice first, every refusal counted against the voucher's owner
(found from outside). ``redeeming_until`` is a short lease taken by a conditional UPDATE
before anything is asked of the node; a redemption that finds it taken is refused at once.

Revision ID: 0072_voucher_redeeming
Revises: 0071_payment_password_failures
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0072_voucher_redeeming"
down_revision: str | None = "0071_payment_password_failures"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lnurl_withdraw_vouchers") as batch:
        batch.add_column(sa.Column("redeeming_until", sa.DateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lnurl_withdraw_vouchers") as batch:
        batch.drop_column("redeeming_until")
