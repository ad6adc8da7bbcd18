"""sign-in (issue 14 §1): e-mail verification and reset tokens, TOTP and recovery codes, the
payment password, account lockout, sign-in challenges between the password and the second
factor, JWT signing keys and refresh-token families

Revision ID: 0034_auth (its parent: down_revision below)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0034_auth"
down_revision: str | None = "0033_kyc_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    bigint = sa.Integer() if sqlite else sa.BigInteger()
    ts = sa.DateTime(timezone=True)

    def users() -> sa.ForeignKey:
        return sa.ForeignKey("users.id")

    op.create_table(
        "auth_credentials",
        sa.Column("user_id", sa.String(40), users(), primary_key=True),
        sa.Column("email_verified_at", ts),
        sa.Column("totp_secret", sa.String(200)),  # sealed: "v1:" + base64, ~83 characters
        sa.Column("totp_confirmed_at", ts),
        sa.Column("totp_last_step", sa.BigInteger()),
        sa.Column("totp_required", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("payment_password_hash", sa.String(200)),
        sa.Column("failed_signins", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_until", ts),
        sa.Column("updated_at", ts, nullable=False),
        sa.CheckConstraint("failed_signins >= 0", name=op.f("ck_auth_credentials_failures")),
        sa.CheckConstraint("totp_confirmed_at IS NULL OR totp_secret IS NOT NULL",
                           name=op.f("ck_auth_credentials_totp")),
    )
    op.create_table(
        "auth_recovery_codes",
        sa.Column("id", bigint, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(40), users(), nullable=False, index=True),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("used_at", ts),
        sa.UniqueConstraint("user_id", "code_hash", name=op.f("uq_auth_recovery_codes_code")),
    )
    op.create_table(
        "auth_email_tokens",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), users(), nullable=False, index=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("used_at", ts),
        sa.CheckConstraint("purpose IN ('verify','reset')",
                           name=op.f("ck_auth_email_tokens_purpose")),
        sa.CheckConstraint("expires_at > created_at", name=op.f("ck_auth_email_tokens_life")),
    )
    op.create_table(
        "auth_signin_challenges",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), users(), nullable=False, index=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_agent", sa.String(300), nullable=False, server_default=""),
        sa.Column("ip", sa.String(64), nullable=False, server_default=""),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("used_at", ts),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_auth_signin_challenges_attempts")),
        sa.CheckConstraint("expires_at > created_at",
                           name=op.f("ck_auth_signin_challenges_life")),
    )
    op.create_table(
        "auth_signing_keys",
        sa.Column("kid", sa.String(40), primary_key=True),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("retired_at", ts),
        sa.Column("verify_until", ts),
        sa.CheckConstraint("alg IN ('HS256')", name=op.f("ck_auth_signing_keys_alg")),
        sa.CheckConstraint("(retired_at IS NULL) = (verify_until IS NULL)",
                           name=op.f("ck_auth_signing_keys_retired")),
    )
    op.create_table(
        "auth_token_families",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), users(), nullable=False, index=True),
        sa.Column("merchant_id", sa.String(40), sa.ForeignKey("merchants.id")),
        sa.Column("session_id", sa.String(40), index=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("revoked_at", ts),
        sa.Column("revoked_reason", sa.String(80)),
        sa.CheckConstraint("(revoked_at IS NULL) = (revoked_reason IS NULL)",
                           name=op.f("ck_auth_token_families_revoked")),
    )
    op.create_table(
        "auth_refresh_tokens",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("family_id", sa.String(40), sa.ForeignKey("auth_token_families.id"),
                  nullable=False, index=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("used_at", ts),
        sa.CheckConstraint("expires_at > created_at",
                           name=op.f("ck_auth_refresh_tokens_life")),
    )


def downgrade() -> None:
    for table in ("auth_refresh_tokens", "auth_token_families", "auth_signing_keys",
                  "auth_signin_challenges", "auth_email_tokens", "auth_recovery_codes",
                  "auth_credentials"):
        op.drop_table(table)
