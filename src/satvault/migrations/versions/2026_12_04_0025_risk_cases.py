"""working risk cases (issue 12 §2): assignment, resolution and money decision on
risk_cases, the insert-only risk_case_events, SAR drafts (risk_sars), and the BOLT11 a
Lightning withdrawal held for review pays once released (risk_held_invoices)

Revision ID: 0025_risk_cases (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025_risk_cases"
down_revision: str | None = "0024_event_relay"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REFUSE = "risk_case_events are insert-only: the history of a case is never overwritten"

PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION risk_case_events_insert_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{_REFUSE}' USING ERRCODE = 'insufficient_privilege';
END
$$
"""
PG_TRIGGER = """
CREATE TRIGGER risk_case_events_no_update BEFORE UPDATE OR DELETE ON risk_case_events
    FOR EACH ROW EXECUTE FUNCTION risk_case_events_insert_only();
"""


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    bigint = sa.BigInteger() if pg else sa.Integer()
    ts = sa.DateTime(timezone=True)
    with op.batch_alter_table("risk_cases") as batch:
        batch.add_column(sa.Column("assignee", sa.String(40), nullable=True))
        batch.add_column(sa.Column("resolution", sa.String(16), nullable=True))
        batch.add_column(sa.Column("money", sa.String(8), nullable=True))
        batch.add_column(sa.Column("closed_by", sa.String(80), nullable=True))
        batch.add_column(sa.Column("closed_at", ts, nullable=True))
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="1"))
        batch.create_check_constraint(
            op.f("ck_risk_cases_resolution"),
            "resolution IS NULL OR resolution IN ('confirmed_risk','false_positive')")
        batch.create_check_constraint(
            op.f("ck_risk_cases_money"),
            "money IS NULL OR money IN ('release','return','keep','none')")
        # Closed exactly when decided: a resolution, a money decision, who and when.
        batch.create_check_constraint(
            op.f("ck_risk_cases_closed"),
            "(status = 'closed') = (resolution IS NOT NULL AND money IS NOT NULL "
            "AND closed_by IS NOT NULL AND closed_at IS NOT NULL)")
        batch.create_index("ix_risk_cases_status", ["status"])
        batch.create_index("ix_risk_cases_assignee", ["assignee"])
    op.create_table(
        "risk_case_events",
        sa.Column("id", bigint, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(40), sa.ForeignKey("risk_cases.id"), nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("uri", sa.String(2000), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("data", sa.Text, nullable=False, server_default="{}"),
        sa.CheckConstraint("kind IN ('note','attachment','status','assignment','decision',"
                           "'sar')", name=op.f("ck_risk_case_events_kind")),
        # An attachment is a reference: where the file is and its digest, never the file.
        sa.CheckConstraint("(kind = 'attachment') = (uri IS NOT NULL AND sha256 IS NOT NULL)",
                           name=op.f("ck_risk_case_events_attachment")),
        sa.CheckConstraint("sha256 IS NULL OR length(sha256) = 64",
                           name=op.f("ck_risk_case_events_sha256")),
    )
    op.create_index("ix_risk_case_events_case_id", "risk_case_events", ["case_id"])
    op.create_table(
        "risk_sars",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("case_id", sa.String(40), sa.ForeignKey("risk_cases.id"), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("narrative", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("filed_reference", sa.String(120), nullable=True),
        sa.Column("filed_by", sa.String(80), nullable=True),
        sa.Column("filed_at", ts, nullable=True),
        sa.CheckConstraint("status IN ('draft','filed')", name=op.f("ck_risk_sars_status")),
        sa.CheckConstraint("(status = 'filed') = (filed_reference IS NOT NULL "
                           "AND filed_at IS NOT NULL)", name=op.f("ck_risk_sars_filed")),
    )
    op.create_index("uq_risk_sars_case_id", "risk_sars", ["case_id"], unique=True)
    op.create_table(
        "risk_held_invoices",
        sa.Column("withdrawal_id", sa.String(40), sa.ForeignKey("withdrawals.id"),
                  primary_key=True),
        sa.Column("bolt11", sa.Text, nullable=False),
    )
    if pg:
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER risk_case_events_no_{verb.lower()} BEFORE {verb} ON "
                       f"risk_case_events BEGIN SELECT RAISE(ABORT, '{_REFUSE}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS risk_case_events_no_update ON risk_case_events")
        op.execute("DROP FUNCTION IF EXISTS risk_case_events_insert_only()")
    op.drop_table("risk_held_invoices")
    op.drop_index("uq_risk_sars_case_id", "risk_sars")
    op.drop_table("risk_sars")
    op.drop_index("ix_risk_case_events_case_id", "risk_case_events")
    op.drop_table("risk_case_events")
    with op.batch_alter_table("risk_cases") as batch:
        batch.drop_index("ix_risk_cases_assignee")
        batch.drop_index("ix_risk_cases_status")
        batch.drop_constraint(op.f("ck_risk_cases_closed"), type_="check")
        batch.drop_constraint(op.f("ck_risk_cases_money"), type_="check")
        batch.drop_constraint(op.f("ck_risk_cases_resolution"), type_="check")
        for col in ("version", "closed_at", "closed_by", "money", "resolution", "assignee"):
            batch.drop_column(col)
