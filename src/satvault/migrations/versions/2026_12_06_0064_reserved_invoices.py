"""ln_invoices: ``reserved``, an invoice kept for an internal payment held for review; and
``internal_refusals``, the internal payments refused after they took the payee's invoice off
the node

An internal payment takes the payee's invoice off the node before its unit of work decides.
One the risk rules held for review left the invoice ``open`` in its row while it was dead on
the node: the checkout page showed its QR code, and another wallet could still pay it
internally (the release then refused). Such an invoice is now ``reserved`` until the case
releases the payment (``paid``) or returns the money (``canceled``); the rows of invoices held
so (an internal withdrawal in ``review`` names them in ``risk_held_invoices``) become
``reserved`` here.

A payment refused after the invoice left the node cost the payee that BOLT11, and a wallet
could do it again and again. Each one is now a row of ``internal_refusals`` (the paying
wallet, the invoice, when), read by the wallet and time (the index) before another invoice is
taken off the node: a wallet with ``internal_refusals_per_day`` of them in the last 24 hours
is refused first. Plain tables and a CHECK constraint: the same on SQLite and PostgreSQL.

Revision ID: 0064_reserved_invoices
Revises: 0061_owner_limits
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0064_reserved_invoices"
down_revision: str | None = "0061_owner_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = "'open','reserved','paid','expired','canceled'"
_OLD_STATUSES = "'open','paid','expired','canceled'"
# The invoices a held internal payment kept (as ``satvault.withdrawals.refused`` found them).
_HELD = ("SELECT lower(h.bolt11) FROM risk_held_invoices h JOIN withdrawals w "
         "ON w.id = h.withdrawal_id WHERE w.status = 'review' AND w.method = 'internal'")


def _statuses(values: str) -> None:
    with op.batch_alter_table("ln_invoices") as batch:
        batch.drop_constraint(op.f("ck_ln_invoices_status"), type_="check")
        batch.create_check_constraint(op.f("ck_ln_invoices_status"), f"status IN ({values})")


def upgrade() -> None:
    _statuses(_STATUSES)
    op.execute(f"UPDATE ln_invoices SET status = 'reserved' WHERE status = 'open' "
               f"AND bolt11 IN ({_HELD})")
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "internal_refusals",
        sa.Column("id", sa.Integer if sqlite else sa.BigInteger, primary_key=True,
                  autoincrement=True),
        sa.Column("wallet_id", sa.String(40), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("payment_hash", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_internal_refusals_wallet_at", "internal_refusals", ["wallet_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_internal_refusals_wallet_at", table_name="internal_refusals")
    op.drop_table("internal_refusals")
    op.execute("UPDATE ln_invoices SET status = 'open' WHERE status = 'reserved'")
    _statuses(_OLD_STATUSES)
