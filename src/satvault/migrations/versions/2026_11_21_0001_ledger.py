"""ledger: accounts, transfers, remembered failures

Revision ID: 0001_ledger
Revises:
Create Date: 2026-11-21

The database enforces the ledger's rules itself, whatever the Python above it does:
balances are never negative, a no-overdraft account never overdraws, amounts stay in the
column's range (u128 on PostgreSQL, i64 on SQLite, where ``typeof`` also refuses the silent
REAL that SQLite's integer overflow would produce), a hold is resolved at most once
(``pending_id`` is unique) and a transfer's shape matches its kind.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_ledger"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BALANCES = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
SNAPSHOTS = tuple(f"{side}_{b}" for side in ("dr", "cr") for b in BALANCES)


def _range_checks(table: str, columns: Sequence[str], sqlite: bool, *, positive: bool = False
                  ) -> list[sa.CheckConstraint]:
    top = 2**63 - 1 if sqlite else 2**128 - 1
    checks = []
    for col in columns:
        low = f"{col} > 0" if positive else f"{col} >= 0"
        expr = f"{low} AND {col} <= {top}"
        if sqlite:
            expr += f" AND typeof({col}) = 'integer'"
        checks.append(sa.CheckConstraint(expr, name=op.f(f"ck_{table}_{col}_range")))
    return checks


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(39, 0)
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    ts = sa.DateTime(timezone=True)

    op.create_table(
        "ledger_accounts",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(160), nullable=False),
        sa.Column("asset", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("owner_type", sa.String(16)),
        sa.Column("owner_id", sa.String(40)),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean, nullable=False),
        sa.Column("credits_must_not_exceed_debits", sa.Boolean, nullable=False),
        *(sa.Column(c, amount, nullable=False) for c in BALANCES),
        sa.Column("created_at", ts, nullable=False),
        sa.UniqueConstraint("name", name="uq_ledger_accounts_name"),
        sa.CheckConstraint(
            "NOT debits_must_not_exceed_credits "
            "OR debits_posted + debits_pending <= credits_posted",
            name=op.f("ck_ledger_accounts_debits_within_credits")),
        sa.CheckConstraint(
            "NOT credits_must_not_exceed_debits "
            "OR credits_posted + credits_pending <= debits_posted",
            name=op.f("ck_ledger_accounts_credits_within_debits")),
        sa.CheckConstraint(
            "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
            name=op.f("ck_ledger_accounts_one_limit")),
        sa.CheckConstraint(
            "kind IN ('customer_wallet','merchant_wallet','hot_wallet','cold_wallet','fees',"
            "'clearing','external','equity')", name=op.f("ck_ledger_accounts_kind")),
        *_range_checks("ledger_accounts", BALANCES, sqlite),
    )
    op.create_index("ix_ledger_accounts_owner", "ledger_accounts",
                    ["owner_type", "owner_id", "asset"])

    op.create_table(
        "ledger_transfers",
        sa.Column("seq", ident, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("debit_account_id", ident, sa.ForeignKey(
            "ledger_accounts.id", name="fk_ledger_transfers_debit_account"), nullable=False),
        sa.Column("credit_account_id", ident, sa.ForeignKey(
            "ledger_accounts.id", name="fk_ledger_transfers_credit_account"), nullable=False),
        sa.Column("amount", amount, nullable=False),
        sa.Column("asset", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("pending_id", sa.String(128), sa.ForeignKey(
            "ledger_transfers.id", name="fk_ledger_transfers_pending"), nullable=True),
        sa.Column("state", sa.String(8), nullable=True),
        sa.Column("timeout_seconds", sa.Integer, nullable=False),
        sa.Column("expires_at", ts, nullable=True),
        sa.Column("linked", sa.Boolean, nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(256), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        *(sa.Column(c, amount, nullable=False) for c in SNAPSHOTS),
        sa.UniqueConstraint("id", name="uq_ledger_transfers_id"),
        # A hold is posted, voided or expired at most once: enforced here, not only in Python.
        sa.UniqueConstraint("pending_id", name="uq_ledger_transfers_pending_id"),
        sa.CheckConstraint("debit_account_id <> credit_account_id",
                           name=op.f("ck_ledger_transfers_accounts_differ")),
        sa.CheckConstraint("kind IN ('single','pending','post','void','expire')",
                           name=op.f("ck_ledger_transfers_kind")),
        sa.CheckConstraint(
            "(kind = 'pending' AND state IN ('pending','posted','voided','expired')) "
            "OR (kind <> 'pending' AND state IS NULL)", name=op.f("ck_ledger_transfers_state")),
        sa.CheckConstraint(
            "(kind IN ('post','void','expire') AND pending_id IS NOT NULL) "
            "OR (kind NOT IN ('post','void','expire') AND pending_id IS NULL)",
            name=op.f("ck_ledger_transfers_pending_link")),
        sa.CheckConstraint(
            "timeout_seconds >= 0 AND (timeout_seconds = 0 OR kind = 'pending')",
            name=op.f("ck_ledger_transfers_timeout")),
        *_range_checks("ledger_transfers", ("amount",), sqlite, positive=True),
        *_range_checks("ledger_transfers", SNAPSHOTS, sqlite),
    )
    op.create_index("ix_ledger_transfers_debit", "ledger_transfers",
                    ["debit_account_id", "seq"])
    op.create_index("ix_ledger_transfers_credit", "ledger_transfers",
                    ["credit_account_id", "seq"])
    op.create_index("ix_ledger_transfers_holds", "ledger_transfers", ["state", "expires_at"])

    op.create_table(
        "ledger_failed_transfers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("result", sa.String(64), nullable=False),
        sa.Column("created_at", ts, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_failed_transfers")
    op.drop_table("ledger_transfers")
    op.drop_table("ledger_accounts")
