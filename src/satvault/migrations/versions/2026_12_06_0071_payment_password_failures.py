"""The payment password's failed attempts counted apart from the sign-in's

The lockout counted every failed factor in one column, and a right sign-in password set it
back to 0. Whoever knew the sign-in password could therefore guess the payment password for
ever: a wrong one counted 1, the next request's right sign-in password cleared it (the API's
password grant checks both in one request; the dashboard's sign-in and step-up forms in two).
``failed_stepups`` counts the payment password's failures; only the payment password itself,
or a TOTP step-up, clears it. Either counter reaching the threshold locks the account, as
before.

Revision ID: 0071_payment_password_failures
Revises: 0070_open_vouchers_expire
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0071_payment_password_failures"
down_revision: str | None = "0070_open_vouchers_expire"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_credentials") as batch:
        batch.add_column(sa.Column("failed_stepups", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.create_check_constraint(op.f("ck_auth_credentials_stepup_failures"),
                                      "failed_stepups >= 0")


def downgrade() -> None:
    with op.batch_alter_table("auth_credentials") as batch:
        batch.drop_constraint(op.f("ck_auth_credentials_stepup_failures"), type_="check")
        batch.drop_column("failed_stepups")
