"""When a webhook was last switched on or off, for the NATS fan-out

With ``event_stream = "nats"`` the webhooks' deliveries are made by the fan-out worker after
the relay, not in the event's own transaction, and it picked the webhooks enabled at that
moment: an event emitted while a webhook was off reached it once switched back on, and one
emitted while it was on was lost if it was switched off meanwhile (found from outside).
``switched_at`` lets the fan-out tell the switch's state when the event was emitted.

Revision ID: 0073_webhook_switched
Revises: 0072_voucher_redeeming
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0073_webhook_switched"
down_revision: str | None = "0072_voucher_redeeming"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("switched_at")
