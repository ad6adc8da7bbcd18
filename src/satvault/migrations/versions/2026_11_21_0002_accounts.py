"""accounts: users, merchants, stores, wallets, API keys, audit log

Revision ID: 0002_accounts
Revises: 0001_ledger
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_accounts"
down_revision: str | None = "0001_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "users",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("display_name", sa.String(120), nullable=False),
        sa.Column("password_hash", sa.String(200)),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("kyc_tier", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.CheckConstraint("kyc_tier BETWEEN 0 AND 3", name=op.f("ck_users_kyc_tier")),
    )
    op.create_table(
        "merchants",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("owner_user_id", sa.String(40),
                  sa.ForeignKey("users.id", name="fk_merchants_owner")),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_table(
        "stores",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40),
                  sa.ForeignKey("merchants.id", name="fk_stores_merchant"), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("default_currency", sa.String(16), nullable=False),
        sa.Column("speed_policy", sa.Integer, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.CheckConstraint("speed_policy IN (0, 1, 2, 6)", name=op.f("ck_stores_speed_policy")),
    )
    op.create_index("ix_stores_merchant_id", "stores", ["merchant_id"])
    op.create_table(
        "wallets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_type", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("asset", sa.String(16), nullable=False),
        sa.Column("ledger_account_id", ident,
                  sa.ForeignKey("ledger_accounts.id", name="fk_wallets_ledger_account"),
                  nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.UniqueConstraint("ledger_account_id", name="uq_wallets_ledger_account_id"),
        sa.UniqueConstraint("owner_type", "owner_id", "asset", name="uq_wallets_owner_asset"),
        sa.CheckConstraint("owner_type IN ('user','merchant')", name=op.f("ck_wallets_owner_type")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_type", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("label", sa.String(120), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("last_used_at", ts),
        sa.Column("revoked_at", ts),
        sa.CheckConstraint("owner_type IN ('user','merchant','store')",
                           name=op.f("ck_api_keys_owner_type")),
    )
    op.create_index("ix_api_keys_owner_id", "api_keys", ["owner_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("at", ts, nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("action", sa.String(80), nullable=False),
        sa.Column("subject", sa.String(120), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])


def downgrade() -> None:
    for table in ("audit_events", "api_keys", "wallets", "stores", "merchants", "users"):
        op.drop_table(table)
