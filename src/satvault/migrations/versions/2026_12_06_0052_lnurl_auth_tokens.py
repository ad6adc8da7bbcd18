"""LNURL-auth logins issue token families: the API keys earlier logins minted are revoked

Until now every LNURL-auth login created an API key (label ``lnurl-auth login``) that never
expired and carried ``withdrawals:write``: permanent money credentials, one more per login.
A login now issues a token family (``satvault.auth.tokens``: a 10-minute access token, a
rotating refresh token, the money scope for 15 minutes). The keys those logins left are
revoked here: those labelled so and owned by a user bound to a linking key (a key a user
created and named so himself is someone else's business). Their holders log in again with
the wallet. The downgrade does not bring them back.

Revision ID: 0052_lnurl_auth_tokens
Revises: 0051_risk_list_payment_uris
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0052_lnurl_auth_tokens"
down_revision: str | None = "0051_risk_list_payment_uris"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP
         WHERE label = 'lnurl-auth login' AND owner_type = 'user' AND revoked_at IS NULL
           AND owner_id IN (SELECT user_id FROM lnurl_auth_keys)
    """)


def downgrade() -> None:
    pass  # revoked keys stay revoked
