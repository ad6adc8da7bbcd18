"""Open withdraw vouchers made without an expiry expire 30 days after this upgrade

A voucher is a bearer link holding money. Since stop 30 one made without an expiry gets 30
days (``SATVAULT_VOUCHER_DEFAULT_LIFETIME_DAYS``) and none may have more than 366, but the
open vouchers made before that had none and stayed redeemable by whoever saw the link, for
ever. Each one still open without an expiry gets 30 days from this upgrade (the default
lifetime; a migration does not read the deployment's settings): redeemable as before until
then, and its creator can bring the expiry forward or push it back within the maximum
(``PATCH /api/v1/lnurl-withdraw/{id}``), as for any voucher. Past it the hold-expiry worker
marks it ``expired`` and returns its hold, as it does every voucher's. Used, cancelled and
expired vouchers are left as they are.

The downgrade leaves the expiries in place: it cannot tell them from expiries their
creators set, and a voucher that expires is the safer of the two states.

Revision ID: 0070_open_vouchers_expire
Revises: 0069_refusals_by_person
Create Date: 2026-12-06
"""

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from satvault.db import UtcDateTime, utcnow

revision: str = "0070_open_vouchers_expire"
down_revision: str | None = "0069_refusals_by_person"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIFETIME = timedelta(days=30)


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE lnurl_withdraw_vouchers SET expires_at = :at "
        "WHERE expires_at IS NULL AND status = 'open'"
    ).bindparams(sa.bindparam("at", value=utcnow() + LIFETIME, type_=UtcDateTime())))


def downgrade() -> None:
    pass  # see the module docstring
