"""web sign-in (issue 14 §1): web_sessions, the server-side sessions of the dashboard and the
admin console (only a SHA-256 of each cookie's token is stored), and users.locale, the
language a user chose for the pages

Revision ID: 0029_web_sessions (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029_web_sessions"
down_revision: str | None = "0028_worker_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", name="fk_web_sessions_user"),
                  nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("csrf_secret", sa.String(64), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("last_seen_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("revoked_at", ts, nullable=True),
        sa.Column("revoked_reason", sa.String(200), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=False, server_default=""),
        sa.Column("ip", sa.String(64), nullable=False, server_default=""),
        sa.Column("mfa_at", ts, nullable=True),
        sa.Column("stepped_up_at", ts, nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_web_sessions_token_hash"),
        sa.CheckConstraint("expires_at > created_at", name=op.f("ck_web_sessions_lifetime")),
        sa.CheckConstraint("length(token_hash) = 64", name=op.f("ck_web_sessions_token_hash")),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("locale", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("locale")
    op.drop_index("ix_web_sessions_user_id", table_name="web_sessions")
    op.drop_table("web_sessions")
