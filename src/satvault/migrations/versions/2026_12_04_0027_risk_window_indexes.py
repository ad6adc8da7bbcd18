"""the risk feature query's money-in side reads a time range (issue 12 performance):
ledger_transfers(credit_account_id, created_at) covering amount and kind

The feature statement sums the wallet account's credits of the last 30 days. The only
index on the credit side was (credit_account_id, seq), so the statement read every credit
the account ever had and filtered by time: fine for a month-old account, a scan of years for
an old one. This index turns it into a range scan that reads only the window, and, carrying
``amount`` and ``kind`` (INCLUDE on PostgreSQL, trailing key columns on SQLite), an
index-only one. The withdrawal side has its (wallet_id, created_at) index since 0020.

Revision ID: 0027_risk_window_indexes (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0027_risk_window_indexes"
down_revision: str | None = "0026_deposit_screening"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_ledger_transfers_credit_window", "ledger_transfers",
                        ["credit_account_id", "created_at"],
                        postgresql_include=["amount", "kind"])
    else:
        op.create_index("ix_ledger_transfers_credit_window", "ledger_transfers",
                        ["credit_account_id", "created_at", "kind", "amount"])


def downgrade() -> None:
    op.drop_index("ix_ledger_transfers_credit_window", "ledger_transfers")
