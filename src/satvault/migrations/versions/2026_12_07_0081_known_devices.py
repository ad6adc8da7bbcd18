"""a browser the owner signed in with is not locked out by a stranger's guesses

Found from outside (a known gap until now): five wrong passwords locked the account, each
later failure for twice as long up to an hour, so about one guess an hour from anywhere kept
its owner from signing in, and, as every factor shared the one lock, from stepping up for a
withdrawal in a session already open. Two changes:

* ``auth_devices``: a browser or API client that completed a sign-in gets a device token
  (stored hashed). A sign-in presenting a live one for the account is not held back by the
  account's lock; its own failures count against, and lock, that device alone. Everyone else
  meets the account's lock as before (the "device cookies" of OWASP's guidance).
  ``auth_signin_challenges.device_id`` carries the device from the password to the code.
* ``auth_credentials.stepup_locked_until``: the factors checked behind a session, a token or
  the right sign-in password (step-up, TOTP on and off, the payment password) lock their own
  way, counted in ``failed_stepups``; guesses at the sign-in form no longer stop them.

Revision ID: 0081_known_devices
Revises: 0080_signup_link_passwords
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0081_known_devices"
down_revision: str | None = "0080_signup_link_passwords"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "auth_devices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False,
                  index=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("last_used_at", ts, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_until", ts),
        sa.Column("revoked_at", ts),
        sa.CheckConstraint("failures >= 0", name=op.f("ck_auth_devices_failures")),
        sa.CheckConstraint("last_used_at >= created_at", name=op.f("ck_auth_devices_used")),
    )
    with op.batch_alter_table("auth_signin_challenges") as batch:
        batch.add_column(sa.Column("device_id", sa.String(40), nullable=True))
    with op.batch_alter_table("auth_credentials") as batch:
        batch.add_column(sa.Column("stepup_locked_until", ts, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_credentials") as batch:
        batch.drop_column("stepup_locked_until")
    with op.batch_alter_table("auth_signin_challenges") as batch:
        batch.drop_column("device_id")
    op.drop_table("auth_devices")
