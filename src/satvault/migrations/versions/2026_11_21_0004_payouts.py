"""payouts: withdrawals, payout batches and their transaction versions, idempotency keys

Revision ID: 0004_payouts
Revises: 0003_onchain
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_payouts"
down_revision: str | None = "0003_onchain"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(39, 0)
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "payout_batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("psbt", sa.Text, nullable=False),
        sa.Column("txid", sa.String(64)),
        sa.Column("feerate_sat_vb", sa.Integer, nullable=False),
        sa.Column("fee_sat", sa.BigInteger, nullable=False),
        sa.Column("change_address_id", ident, sa.ForeignKey("onchain_addresses.id")),
        sa.Column("broadcast_attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("broadcast_height", sa.Integer),
        sa.Column("confirmed_height", sa.Integer),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.CheckConstraint(
            "status IN ('signing','signed','broadcast','confirmed','abandoned','stuck')",
            name=op.f("ck_payout_batches_status")),
        sa.CheckConstraint("fee_sat >= 0", name=op.f("ck_payout_batches_fee")),
    )
    op.create_table(
        "withdrawals",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("wallet_id", sa.String(40), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("destination", sa.String(2000), nullable=False),
        sa.Column("script_pubkey", sa.String(140)),
        sa.Column("amount_msat", amount, nullable=False),
        sa.Column("fee_reserve_msat", amount, nullable=False),
        sa.Column("fee_msat", amount),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("batch_id", sa.String(40), sa.ForeignKey("payout_batches.id")),
        sa.Column("txid", sa.String(64)),
        sa.Column("hold_id", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.CheckConstraint("amount_msat > 0", name=op.f("ck_withdrawals_amount")),
        sa.CheckConstraint("fee_reserve_msat >= 0", name=op.f("ck_withdrawals_reserve")),
        sa.CheckConstraint(
            "status IN ('pending','batched','broadcast','confirmed','failed','cancelled')",
            name=op.f("ck_withdrawals_status")),
        sa.CheckConstraint("method <> 'onchain' OR (status = 'pending') = (batch_id IS NULL) "
                           "OR status IN ('failed','cancelled')",
                           name=op.f("ck_withdrawals_batch")),
        sa.CheckConstraint("method IN ('onchain','lightning','internal')",
                           name=op.f("ck_withdrawals_method")),
    )
    op.create_index("ix_withdrawals_wallet_id", "withdrawals", ["wallet_id"])
    op.create_index("ix_withdrawals_batch_id", "withdrawals", ["batch_id"])
    op.create_index("ix_withdrawals_status", "withdrawals", ["status", "created_at"])
    op.create_table(
        "payout_txs",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(40), sa.ForeignKey("payout_batches.id"), nullable=False),
        sa.Column("txid", sa.String(64), nullable=False, unique=True),
        sa.Column("raw_tx", sa.Text, nullable=False),
        sa.Column("psbt", sa.Text, nullable=False),
        sa.Column("fee_sat", sa.BigInteger, nullable=False),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_index("ix_payout_txs_batch_id", "payout_txs", ["batch_id"])
    op.create_table(
        "payout_inputs",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(40), sa.ForeignKey("payout_batches.id"), nullable=False),
        # A coin is reserved by at most one live payout.
        sa.Column("payment_id", ident, sa.ForeignKey("onchain_payments.id"), nullable=False,
                  unique=True),
    )
    op.create_index("ix_payout_inputs_batch_id", "payout_inputs", ["batch_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(80), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("response_status", sa.Integer),
        sa.Column("response_body", sa.Text),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.UniqueConstraint("owner", "key", name="uq_idempotency_keys_owner_key"),
        sa.CheckConstraint("status IN ('running','done')", name=op.f("ck_idempotency_status")),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    for t in ("idempotency_keys", "payout_inputs", "payout_txs", "withdrawals",
              "payout_batches"):
        op.drop_table(t)
