"""each sign-up's link carries the password of that sign-up

Found from outside: signing up again with an address still pending replaced its password and
spent the earlier links, so whoever signed up second with somebody else's address made the
owner's own link useless and the owner's next link set the stranger's password. Each
verification link now carries the argon2 hash of the password of the sign-up that sent it
(``auth_email_tokens.password_hash``); following a link needs that password and makes it the
account's. Links issued before this revision have none and verify as before.

Revision ID: 0080_signup_link_passwords
Revises: 0079_webhook_switches
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0080_signup_link_passwords"
down_revision: str | None = "0079_webhook_switches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_email_tokens") as batch:
        batch.add_column(sa.Column("password_hash", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_email_tokens") as batch:
        batch.drop_column("password_hash")
