"""webhooks: the secret a rotation replaced (``previous_secret``, until
``previous_secret_expires_at``), and room for sealed secrets

``POST /api/v1/webhooks/{id}/rotate-secret`` keeps the old secret for an overlap window, during
which deliveries carry a signature under each. With ``SATVAULT_SECRET_KEY`` set, secrets are
sealed (``v1:`` + base64 of nonce, ciphertext and tag): a 200-character secret takes 307, so
the column grows to 400. Rows already there are not rewritten here (a migration has no key to
seal with): a plain secret is sealed the next time the dispatcher sends for its webhook, or
when it is rotated.

Revision ID: 0059_webhook_secret_rotation
Revises: 0058_rate_source_width
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0059_webhook_secret_rotation"
down_revision: str | None = "0058_rate_source_width"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.alter_column("secret", existing_type=sa.String(200), type_=sa.String(400),
                           existing_nullable=False)
        batch.add_column(sa.Column("previous_secret", sa.String(400), nullable=True))
        batch.add_column(sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("previous_secret_expires_at")
        batch.drop_column("previous_secret")
        batch.alter_column("secret", existing_type=sa.String(400), type_=sa.String(200),
                           existing_nullable=False)
