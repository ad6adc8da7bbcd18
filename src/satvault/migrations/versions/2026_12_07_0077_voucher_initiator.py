"""Who made an LNURL-withdraw voucher, for the approvers of what its redemption pays out

A voucher's redemption asked for its withdrawal with the wallet's owner as the initiator,
not the person who made the voucher (found from outside: an admin made a voucher on a
customer's wallet, redeemed it to a node of their own, and, being no initiator of it,
approved the withdrawal the policy held as its second pair of eyes). ``initiator`` keeps who
made it (a user id; null when nobody stands behind the key, or for a voucher made before
this revision: its redemption then names the wallet's owner, as before).

Revision ID: 0077_voucher_initiator
Revises: 0076_risk_tier_from_records
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0077_voucher_initiator"
down_revision: str | None = "0076_risk_tier_from_records"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lnurl_withdraw_vouchers") as batch:
        batch.add_column(sa.Column("initiator", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lnurl_withdraw_vouchers") as batch:
        batch.drop_column("initiator")
