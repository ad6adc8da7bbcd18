"""events: the transactional outbox, webhooks, their deliveries and the attempt log

Revision ID: 0007_events
Revises: 0006_lnurl
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_events"
down_revision: str | None = "0006_lnurl"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ident = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    ts = sa.DateTime(timezone=True)

    op.create_table(
        "outbox_events",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("subject_type", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("store_id", sa.String(40)),
        sa.Column("wallet_id", sa.String(40)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.CheckConstraint("subject_type IN ('invoice','withdrawal','wallet')",
                           name=op.f("ck_outbox_events_subject_type")),
        sa.CheckConstraint("subject_type <> 'wallet' OR wallet_id = subject_id",
                           name=op.f("ck_outbox_events_wallet_subject")),
    )
    op.create_index("ix_outbox_events_subject", "outbox_events",
                    ["subject_type", "subject_id", "id"])
    op.create_index("ix_outbox_events_wallet", "outbox_events", ["wallet_id", "id"])

    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("store_id", sa.String(40), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.CheckConstraint("length(secret) >= 16", name=op.f("ck_webhooks_secret")),
        sa.CheckConstraint("events <> ''", name=op.f("ck_webhooks_events")),
    )
    op.create_index("ix_webhooks_store_id", "webhooks", ["store_id"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("webhook_id", sa.String(40),
                  sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", ident, sa.ForeignKey("outbox_events.id"), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", ts),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("last_duration_ms", sa.Integer),
        sa.Column("request_body", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_webhook_event"),
        sa.CheckConstraint("status IN ('pending','succeeded','failed','dead')",
                           name=op.f("ck_webhook_deliveries_status")),
        sa.CheckConstraint("(status IN ('pending','failed')) = (next_attempt_at IS NOT NULL)",
                           name=op.f("ck_webhook_deliveries_waiting")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_deliveries_attempts")),
        sa.CheckConstraint("status = 'pending' OR attempts > 0",
                           name=op.f("ck_webhook_deliveries_tried")),
    )
    op.create_index("ix_webhook_deliveries_event_id", "webhook_deliveries", ["event_id"])
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries",
                    ["status", "next_attempt_at"])
    # Each endpoint's queue, without its delivered history (partial index on both databases).
    waiting = sa.text("status IN ('pending','failed')")
    op.create_index("ix_webhook_deliveries_waiting", "webhook_deliveries",
                    ["webhook_id", "event_id"], sqlite_where=waiting, postgresql_where=waiting)

    op.create_table(
        "webhook_attempts",
        sa.Column("id", ident, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(40),
                  sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", ts, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("request_headers", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response_excerpt", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("next_attempt_at", ts),
        sa.CheckConstraint("attempt >= 1 AND duration_ms >= 0",
                           name=op.f("ck_webhook_attempts_counts")),
        sa.CheckConstraint("status_code IS NOT NULL OR error IS NOT NULL",
                           name=op.f("ck_webhook_attempts_outcome")),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])


def downgrade() -> None:
    for table in ("webhook_attempts", "webhook_deliveries", "webhooks", "outbox_events"):
        op.drop_table(table)
