"""lnurl: Lightning Addresses, LNURL-withdraw vouchers, LNURL-auth keys and challenges

Revision ID: 0006_lnurl
Revises: 0005_lightning
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_lnurl"
down_revision: str | None = "0005_lightning"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(39, 0)
    ts = sa.DateTime(timezone=True)
    # LUD-16: a username is made of a-z 0-9 - _ . only (no regex operator on SQLite: GLOB).
    charset = ("username NOT GLOB '*[^a-z0-9._-]*'" if sqlite
               else "username ~ '^[a-z0-9._-]+$'")
    hex_k1 = "k1 NOT GLOB '*[^0-9a-f]*'" if sqlite else "k1 ~ '^[0-9a-f]+$'"

    op.create_table(
        "lightning_addresses",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("wallet_id", sa.String(40), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.CheckConstraint(charset, name=op.f("ck_lightning_addresses_charset")),
        sa.CheckConstraint("length(username) BETWEEN 1 AND 64",
                           name=op.f("ck_lightning_addresses_length")),
    )
    op.create_index("ix_lightning_addresses_wallet_id", "lightning_addresses", ["wallet_id"])

    op.create_table(
        "lnurl_withdraw_vouchers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("wallet_id", sa.String(40), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("k1", sa.String(64), nullable=False),
        sa.Column("min_msat", amount, nullable=False),
        sa.Column("amount_msat", amount, nullable=False),
        sa.Column("reserve_msat", amount, nullable=False),
        sa.Column("description", sa.String(639), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("hold_id", sa.String(128), nullable=False),
        sa.Column("withdrawal_id", sa.String(40), sa.ForeignKey("withdrawals.id")),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("closed_at", ts),
        sa.UniqueConstraint("k1", name="uq_lnurl_withdraw_vouchers_k1"),
        sa.UniqueConstraint("hold_id", name="uq_lnurl_withdraw_vouchers_hold_id"),
        sa.UniqueConstraint("withdrawal_id", name="uq_lnurl_withdraw_vouchers_withdrawal_id"),
        sa.CheckConstraint("status IN ('open','used','canceled')",
                           name=op.f("ck_lnurl_withdraw_vouchers_status")),
        sa.CheckConstraint("min_msat >= 1 AND min_msat <= amount_msat AND reserve_msat >= 0",
                           name=op.f("ck_lnurl_withdraw_vouchers_amounts")),
        sa.CheckConstraint("(status = 'open') = (closed_at IS NULL)",
                           name=op.f("ck_lnurl_withdraw_vouchers_closed")),
        sa.CheckConstraint("withdrawal_id IS NULL OR status = 'used'",
                           name=op.f("ck_lnurl_withdraw_vouchers_withdrawal")),
        sa.CheckConstraint(f"length(k1) = 64 AND {hex_k1}",
                           name=op.f("ck_lnurl_withdraw_vouchers_k1")),
    )
    op.create_index("ix_lnurl_withdraw_vouchers_wallet_id", "lnurl_withdraw_vouchers",
                    ["wallet_id"])

    op.create_table(
        "lnurl_auth_keys",
        sa.Column("linking_key", sa.String(66), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.CheckConstraint("length(linking_key) = 66", name=op.f("ck_lnurl_auth_keys_length")),
    )
    op.create_index("ix_lnurl_auth_keys_user_id", "lnurl_auth_keys", ["user_id"])

    op.create_table(
        "lnurl_auth_challenges",
        sa.Column("k1", sa.String(64), primary_key=True),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("linking_key", sa.String(66),
                  sa.ForeignKey("lnurl_auth_keys.linking_key")),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id")),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("verified_at", ts),
        sa.Column("consumed_at", ts),
        sa.CheckConstraint("status IN ('open','verified','consumed')",
                           name=op.f("ck_lnurl_auth_challenges_status")),
        sa.CheckConstraint("(status = 'open') = (user_id IS NULL)",
                           name=op.f("ck_lnurl_auth_challenges_user")),
        sa.CheckConstraint("(status = 'open') = (linking_key IS NULL)",
                           name=op.f("ck_lnurl_auth_challenges_key")),
        sa.CheckConstraint("(status = 'consumed') = (consumed_at IS NOT NULL)",
                           name=op.f("ck_lnurl_auth_challenges_consumed")),
        sa.CheckConstraint(f"length(k1) = 64 AND {hex_k1}",
                           name=op.f("ck_lnurl_auth_challenges_k1")),
    )
    op.create_index("ix_lnurl_auth_challenges_expires_at", "lnurl_auth_challenges",
                    ["expires_at"])


def downgrade() -> None:
    for table in ("lnurl_auth_challenges", "lnurl_auth_keys", "lnurl_withdraw_vouchers",
                  "lightning_addresses"):
        op.drop_table(table)
