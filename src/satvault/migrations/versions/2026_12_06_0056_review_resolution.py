"""review_items: who resolved an item and why (``resolved_by``, ``resolution``), and an index
of the open items by kind

Items were resolved with SQL, which recorded only the time. ``satvault review resolve`` and
``POST /api/v1/admin/review-items/{id}/resolve`` now record the acting admin and a required
note beside ``resolved_at`` (an accepted refill's own item: ``system``). Rows resolved before
keep both empty. The partial index serves what reads the open items at every scrape and
listing: the metric ``satvault_review_items_open`` (counted by kind) and the open list.

Revision ID: 0056_review_resolution
Revises: 0055_voucher_expiry
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0056_review_resolution"
down_revision: str | None = "0055_voucher_expiry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = "resolved_at IS NULL"


def upgrade() -> None:
    op.add_column("review_items", sa.Column("resolved_by", sa.String(80), nullable=True))
    op.add_column("review_items", sa.Column("resolution", sa.Text, nullable=True))
    op.create_index("ix_review_items_open", "review_items", ["kind", "id"],
                    sqlite_where=sa.text(_OPEN), postgresql_where=sa.text(_OPEN))


def downgrade() -> None:
    op.drop_index("ix_review_items_open", table_name="review_items")
    with op.batch_alter_table("review_items") as batch:
        batch.drop_column("resolution")
        batch.drop_column("resolved_by")
