"""kyc_records (insert-only: the database refuses UPDATE and DELETE), screening_entries,
wallets.frozen_at / frozen_reason, and the withdrawal usage function that folds the KYC tier
limits and the freeze into the withdrawal's one serialising statement (PostgreSQL)

Revision ID: 0018_kyc
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_kyc"
down_revision: str | None = "0017_audit_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REFUSE = "kyc_records are insert-only: the KYC history is never overwritten"

PG_TRIGGER = f"""
CREATE OR REPLACE FUNCTION kyc_records_insert_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{_REFUSE}' USING ERRCODE = 'insufficient_privilege';
END
$$
"""
PG_TRIGGER_ON = """
CREATE TRIGGER kyc_records_no_update BEFORE UPDATE OR DELETE ON kyc_records
    FOR EACH ROW EXECUTE FUNCTION kyc_records_insert_only();
"""

# Like withdrawals_spent_since (0011): lock the wallet row, then read with a snapshot taken
# after the lock, so concurrent withdrawals of one wallet count each other. Returns what the
# platform's 24-hour limit and the tier's per-rail windows need, and whether it is frozen.
PG_USAGE = """
CREATE OR REPLACE FUNCTION withdrawal_usage(p_wallet varchar, p_method varchar,
                                            p_day timestamptz, p_month timestamptz)
RETURNS TABLE(spent_day numeric, rail_day numeric, rail_month numeric, frozen boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    SELECT w.frozen_at IS NOT NULL INTO frozen FROM wallets w WHERE w.id = p_wallet FOR UPDATE;
    SELECT coalesce(sum(amount_msat) FILTER (WHERE created_at >= p_day), 0),
           coalesce(sum(amount_msat) FILTER (WHERE created_at >= p_day
                                              AND method = p_method), 0),
           coalesce(sum(amount_msat) FILTER (WHERE method = p_method), 0)
      INTO spent_day, rail_day, rail_month
      FROM withdrawals
     WHERE wallet_id = p_wallet AND created_at >= least(p_day, p_month)
       AND status NOT IN ('failed', 'cancelled');
    frozen := coalesce(frozen, false);
    RETURN NEXT;
END
$$
"""


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    ts = sa.DateTime(timezone=True)
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "kyc_records",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("owner_type", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("tier", sa.Integer, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("full_name", sa.String(200), nullable=False),
        sa.Column("documents", sa.Text, nullable=False),
        sa.Column("checks", sa.Text, nullable=False),
        sa.Column("screening", sa.Text, nullable=False),
        sa.Column("reviewer", sa.String(80), nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("decided_at", ts, nullable=False),
        sa.CheckConstraint("tier >= 0", name=op.f("ck_kyc_records_tier")),
        sa.CheckConstraint("decision IN ('approved', 'rejected', 'blocked')",
                           name=op.f("ck_kyc_records_decision")),
        sa.CheckConstraint("owner_type IN ('user', 'merchant')",
                           name=op.f("ck_kyc_records_owner_type")),
    )
    op.create_index("ix_kyc_records_owner", "kyc_records", ["owner_type", "owner_id", "id"])
    op.create_table(
        "screening_entries",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("list", sa.String(16), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("normalized", sa.String(300), nullable=False),
        sa.Column("reference", sa.String(120), nullable=False),
        sa.Column("loaded_at", ts, nullable=False),
        sa.CheckConstraint("list IN ('pep', 'sanctions')", name=op.f("ck_screening_entries_list")),
    )
    op.create_index("ix_screening_entries_list", "screening_entries", ["list"])
    # Plain ADD COLUMN (SQLite has it too): no copy of the wallets table.
    op.add_column("wallets", sa.Column("frozen_at", ts, nullable=True))
    op.add_column("wallets", sa.Column("frozen_reason", sa.String(500), nullable=True))
    if pg:
        op.execute(PG_TRIGGER)
        op.execute(PG_TRIGGER_ON)
        op.execute(PG_USAGE)
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER kyc_records_no_{verb.lower()} BEFORE {verb} ON "
                       f"kyc_records BEGIN SELECT RAISE(ABORT, '{_REFUSE}'); END")


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    if pg:
        op.execute("DROP FUNCTION IF EXISTS withdrawal_usage(varchar, varchar, timestamptz, "
                   "timestamptz)")
        op.execute("DROP TRIGGER IF EXISTS kyc_records_no_update ON kyc_records")
        op.execute("DROP FUNCTION IF EXISTS kyc_records_insert_only()")
    with op.batch_alter_table("wallets") as batch:
        batch.drop_column("frozen_reason")
        batch.drop_column("frozen_at")
    op.drop_table("screening_entries")
    op.drop_table("kyc_records")
