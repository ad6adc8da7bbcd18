"""store_invoices.rate_source: 200 characters, for a median's list of sources

A rate taken from several sources is recorded as ``median(kraken,coinbase,bitstamp,coingecko)``
(plug-in names may be longer), which the 40 characters of a single source's name did not
hold. SQLite does not enforce a VARCHAR's length, so only PostgreSQL's column is widened
(widening a varchar rewrites nothing there).

Revision ID: 0058_rate_source_width
Revises: 0057_enrollment_families
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0058_rate_source_width"
down_revision: str | None = "0057_enrollment_families"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("store_invoices", "rate_source", existing_type=sa.String(40),
                        type_=sa.String(200), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("store_invoices", "rate_source", existing_type=sa.String(200),
                        type_=sa.String(40), existing_nullable=True,
                        postgresql_using="left(rate_source, 40)")
