"""several instances (issue 13 §4): worker_leases, the lease that elects the one process running
the singleton workers (chain watcher, Lightning listener and payer, payouts, custody, audit
sealer, alerts), with the epoch that fences a deposed leader's writes

Revision ID: 0028_worker_leases (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028_worker_leases"
down_revision: str | None = "0027_risk_window_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Work queued by one process wakes the workers of the others (PostgreSQL): a statement that
# inserts rows into these tables sends NOTIFY satvault_work '<table>' when it commits.
WAKE_TABLES = ("withdrawals", "ln_payments", "webhook_deliveries")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    bigint = sa.Integer() if sqlite else sa.BigInteger()
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "worker_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(120), nullable=False),
        sa.Column("epoch", bigint, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("renewed_at", ts, nullable=False),
        sa.CheckConstraint("epoch >= 1", name=op.f("ck_worker_leases_epoch")),
    )
    if sqlite:
        return
    op.execute("CREATE FUNCTION satvault_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$ "
               "BEGIN PERFORM pg_notify('satvault_work', TG_TABLE_NAME); RETURN NULL; END $$")
    for table in WAKE_TABLES:
        op.execute(f"CREATE TRIGGER {table}_notify_work AFTER INSERT ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION satvault_notify_work()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        for table in WAKE_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_work ON {table}")
        op.execute("DROP FUNCTION IF EXISTS satvault_notify_work()")
    op.drop_table("worker_leases")
