"""the risk screening's ``kyc_tier`` is the paying owner's own tier from its KYC records

``risk_screen_features`` read ``users.kyc_tier`` (a cache an approval writes for users only)
and, for a merchant, its owning user's cached tier. Found from outside: a merchant approved
at KYB tier 1 whose owner is tier 0 was scored as tier 0 (``kyc0_large`` matched). It now
reads what the limits enforce (``satvault.kyc.service.tier_expr``): the tier of the owner's
latest approved record, 0 without one, for a user or a merchant alike; one index probe
(``ix_kyc_records_owner``) in place of one or two primary-key probes, in the same statement.
SQLite reads the rows (``satvault.risk.features._query``), which reads the same expression.

Revision ID: 0076_risk_tier_from_records
Revises: 0075_held_invoice_hash
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0076_risk_tier_from_records"
down_revision: str | None = "0075_held_invoice_hash"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As 0037 wrote it (0067 holds it twice: a person alone's statement and the other one).
_CACHED = """coalesce(CASE WHEN p_merchant
            THEN (SELECT u.kyc_tier FROM users u JOIN merchants m ON m.owner_user_id = u.id
                   WHERE m.id = p_owner)
            ELSE (SELECT u.kyc_tier FROM users u WHERE u.id = p_owner) END, 0)::integer,"""
_RECORDS = """coalesce((SELECT kr.tier FROM kyc_records kr
                   WHERE kr.owner_type = CASE WHEN p_merchant THEN 'merchant' ELSE 'user' END
                     AND kr.owner_id = p_owner AND kr.decision = 'approved'
                   ORDER BY kr.id DESC LIMIT 1), 0)::integer,"""


def _swap(old: str, new: str) -> None:
    found: str = op.get_bind().exec_driver_sql(
        "SELECT pg_get_functiondef('risk_screen_features'::regproc)").scalar_one()
    assert found.count(old) >= 1, "risk_screen_features is not the body expected"
    op.execute(found.replace(old, new))  # CREATE OR REPLACE: the same arguments and columns


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _swap(_CACHED, _RECORDS)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _swap(_RECORDS, _CACHED)
