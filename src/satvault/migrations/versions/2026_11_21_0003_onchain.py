"""onchain: watch-only wallets, addresses, deposit requests, payments, blocks, reviews

Revision ID: 0003_onchain
Revises: 0002_accounts
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_onchain"
down_revision: str | None = "0002_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(39, 0)
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "onchain_wallets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False, unique=True),
        sa.Column("descriptor", sa.Text, nullable=False),
        sa.Column("network", sa.String(16), nullable=False),
        sa.Column("gap_limit", sa.Integer, nullable=False),
        sa.Column("next_receive", sa.Integer, nullable=False),
        sa.Column("next_change", sa.Integer, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.CheckConstraint("gap_limit BETWEEN 1 AND 10000", name=op.f("ck_onchain_wallets_gap")),
        sa.CheckConstraint("next_receive >= 0 AND next_change >= 0",
                           name=op.f("ck_onchain_wallets_next")),
    )
    op.create_table(
        "onchain_addresses",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("wallet_id", sa.String(40), sa.ForeignKey("onchain_wallets.id"),
                  nullable=False),
        sa.Column("chain", sa.Integer, nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("address", sa.String(100), nullable=False, unique=True),
        sa.Column("script_pubkey", sa.String(140), nullable=False, unique=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("owner_type", sa.String(16)),
        sa.Column("owner_id", sa.String(40)),
        sa.Column("purpose", sa.String(16)),
        sa.Column("request_id", sa.String(40)),
        sa.Column("allocated_at", ts),
        sa.Column("expires_at", ts),
        sa.Column("ever_received", sa.Boolean, nullable=False),
        sa.Column("times_allocated", sa.Integer, nullable=False),
        sa.UniqueConstraint("wallet_id", "chain", "idx", name="uq_onchain_addresses_position"),
        sa.CheckConstraint("chain IN (0, 1) AND idx >= 0",
                           name=op.f("ck_onchain_addresses_position")),
        sa.CheckConstraint("status IN ('lookahead','allocated','expired','used')",
                           name=op.f("ck_onchain_addresses_status")),
        # An address that ever received money is never handed to anyone else.
        sa.CheckConstraint("NOT (ever_received AND status IN ('lookahead','expired'))",
                           name=op.f("ck_onchain_addresses_no_recycle_after_use")),
    )
    op.create_index("ix_onchain_addresses_recycle", "onchain_addresses",
                    ["status", "expires_at"])
    op.create_table(
        "deposit_requests",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("wallet_id", sa.String(40), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("address_id", ident, sa.ForeignKey("onchain_addresses.id")),
        sa.Column("amount_msat", amount),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("required_confirmations", sa.Integer, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts),
        sa.CheckConstraint("amount_msat IS NULL OR amount_msat > 0",
                           name=op.f("ck_deposit_requests_amount")),
        sa.CheckConstraint("required_confirmations BETWEEN 0 AND 100",
                           name=op.f("ck_deposit_requests_confirmations")),
    )
    op.create_index("ix_deposit_requests_wallet_id", "deposit_requests", ["wallet_id"])
    op.create_table(
        "onchain_payments",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("txid", sa.String(64), nullable=False),
        sa.Column("vout", sa.Integer, nullable=False),
        sa.Column("address_id", ident, sa.ForeignKey("onchain_addresses.id"), nullable=False),
        sa.Column("script_pubkey", sa.String(140), nullable=False),
        sa.Column("value_sat", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("block_hash", sa.String(64)),
        sa.Column("block_height", sa.Integer),
        sa.Column("request_id", sa.String(40)),
        sa.Column("wallet_id", sa.String(40)),
        sa.Column("required_confirmations", sa.Integer, nullable=False),
        sa.Column("credit_state", sa.String(12), nullable=False),
        sa.Column("hold_generation", sa.Integer, nullable=False, server_default="0"),
        sa.Column("spent_by", sa.String(64)),
        sa.Column("first_seen_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        # Every external event is recorded, and so credited, at most once.
        sa.UniqueConstraint("txid", "vout", name="uq_onchain_payments_outpoint"),
        sa.CheckConstraint("value_sat > 0", name=op.f("ck_onchain_payments_value")),
        sa.CheckConstraint("status IN ('mempool','confirmed','conflicted')",
                           name=op.f("ck_onchain_payments_status")),
        sa.CheckConstraint("credit_state IN ('none','pending','credited','reversed','review')",
                           name=op.f("ck_onchain_payments_credit_state")),
        sa.CheckConstraint("(status = 'confirmed') = (block_hash IS NOT NULL)",
                           name=op.f("ck_onchain_payments_block")),
    )
    op.create_index("ix_onchain_payments_address_id", "onchain_payments", ["address_id"])
    op.create_index("ix_onchain_payments_request_id", "onchain_payments", ["request_id"])
    op.create_index("ix_onchain_payments_open", "onchain_payments", ["credit_state", "status"])
    op.create_table(
        "chain_blocks",
        sa.Column("height", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("processed_at", ts, nullable=False),
    )
    op.create_table(
        "review_items",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(120), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("resolved_at", ts),
    )


def downgrade() -> None:
    for t in ("review_items", "chain_blocks", "onchain_payments", "deposit_requests",
              "onchain_addresses", "onchain_wallets"):
        op.drop_table(t)
