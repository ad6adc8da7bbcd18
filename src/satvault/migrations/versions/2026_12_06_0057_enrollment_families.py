"""auth_token_families: ``enroll_only``, a family whose only use is turning TOTP on

An LNURL-auth login to an account that must have TOTP (an admin, or marked by one) and has
none proves one factor only, the wallet's linking key; it used to get nothing, which left
such an account no way in (it has no password for the dashboard's enrollment page). It now
gets a family with no scope (``enroll_only``): the TOTP endpoints, which need a user's
access token and no scope, are all it can reach; it is not refreshed. The CHECK keeps such a
family scopeless whatever the code does. Existing families are not enrollment families.

Revision ID: 0057_enrollment_families
Revises: 0056_review_resolution
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0057_enrollment_families"
down_revision: str | None = "0056_review_resolution"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_token_families") as batch:
        batch.add_column(sa.Column("enroll_only", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.create_check_constraint(op.f("ck_auth_token_families_enroll_only"),
                                      "NOT enroll_only OR scopes = ''")


def downgrade() -> None:
    with op.batch_alter_table("auth_token_families") as batch:
        batch.drop_constraint(op.f("ck_auth_token_families_enroll_only"), type_="check")
        batch.drop_column("enroll_only")
