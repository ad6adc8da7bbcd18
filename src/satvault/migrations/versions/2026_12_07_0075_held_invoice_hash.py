"""The payment hash of a Lightning withdrawal held for review

A second request to pay an external invoice while a first one is held for review was
screened afresh and, approved, paid at once (found from outside): the review was bypassed
and the held one could no longer be released. ``payment_hash`` (filled from the stored BOLT11
for the rows already there) lets a new request for the same hash be refused while one is
held, whatever text its BOLT11 has.

Revision ID: 0075_held_invoice_hash
Revises: 0074_withdrawal_initiator
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import bolt11
import sqlalchemy as sa
from alembic import op

revision: str = "0075_held_invoice_hash"
down_revision: str | None = "0074_withdrawal_initiator"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("risk_held_invoices") as batch:
        batch.add_column(sa.Column("payment_hash", sa.String(64), nullable=True))
    held = sa.table("risk_held_invoices", sa.column("withdrawal_id", sa.String),
                    sa.column("bolt11", sa.Text), sa.column("payment_hash", sa.String))
    bind = op.get_bind()
    for wid, text in bind.execute(sa.select(held.c.withdrawal_id, held.c.bolt11)).all():
        try:
            payment_hash = bolt11.decode(text).payment_hash
        except Exception:  # never stored undecodable; left null rather than fail the upgrade
            continue
        bind.execute(held.update().where(held.c.withdrawal_id == wid)
                     .values(payment_hash=payment_hash))
    op.create_index("ix_risk_held_invoices_payment_hash", "risk_held_invoices",
                    ["payment_hash"])


def downgrade() -> None:
    op.drop_index("ix_risk_held_invoices_payment_hash", table_name="risk_held_invoices")
    with op.batch_alter_table("risk_held_invoices") as batch:
        batch.drop_column("payment_hash")
