"""Every switch of a webhook, for the NATS fan-out

The fan-out (``event_stream = "nats"``) runs after the event's transaction and must tell
whether each webhook was on when the event was emitted. ``webhooks.switched_at`` (0073) held
only the last switch: a webhook switched off and on again after an event got nothing, one
switched on and off again got it (found from outside). ``webhook_switches`` keeps every
switch and the state at creation.

A webhook made before this revision gets the history 0073's rule implied: its state at
creation (the opposite of now if it was switched since), and its last switch.

Revision ID: 0079_webhook_switches
Revises: 0078_screening_confusables
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0079_webhook_switches"
down_revision: str | None = "0078_screening_confusables"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_switches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("webhook_id", sa.String(40),
                  sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_webhook_switches_webhook_at", "webhook_switches", ["webhook_id", "at"])
    op.execute(
        "INSERT INTO webhook_switches (webhook_id, enabled, at) "
        "SELECT id, CASE WHEN switched_at IS NULL THEN enabled ELSE NOT enabled END, "
        "created_at FROM webhooks")
    op.execute(
        "INSERT INTO webhook_switches (webhook_id, enabled, at) "
        "SELECT id, enabled, switched_at FROM webhooks WHERE switched_at IS NOT NULL")


def downgrade() -> None:
    op.drop_index("ix_webhook_switches_webhook_at", "webhook_switches")
    op.drop_table("webhook_switches")
