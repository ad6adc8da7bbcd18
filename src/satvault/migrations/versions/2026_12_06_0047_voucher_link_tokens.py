"""lnurl_withdraw_vouchers.link_hash: the SHA-256 of a secret token that alone opens a
withdraw voucher's LNURL (``/lnurlw/<token>``), apart from the voucher id, which the audit
log, the ledger refs, the logs and the admin pages show (until now the id was the link, so
whoever read any of those could redeem an open voucher)

Every voucher created before this migration keeps its printed link: its token is its id,
hashed like the others (computed here, SQLite having no SHA-256 function).

Revision ID: 0047_voucher_link_tokens
Revises: 0046_change_paid_from_outside
Create Date: 2026-12-06
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0047_voucher_link_tokens"
down_revision: str | None = "0046_change_paid_from_outside"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VOUCHERS = sa.table("lnurl_withdraw_vouchers", sa.column("id", sa.String),
                     sa.column("link_hash", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("lnurl_withdraw_vouchers") as batch:
        batch.add_column(sa.Column("link_hash", sa.String(64)))
    bind = op.get_bind()
    ids = bind.execute(sa.select(_VOUCHERS.c.id)).scalars().all()
    for vid in ids:
        bind.execute(sa.update(_VOUCHERS).where(_VOUCHERS.c.id == vid).values(
            link_hash=hashlib.sha256(vid.encode()).hexdigest()))
    with op.batch_alter_table("lnurl_withdraw_vouchers") as batch:
        batch.alter_column("link_hash", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_lnurl_withdraw_vouchers_link_hash", ["link_hash"])
        batch.create_check_constraint(op.f("ck_lnurl_withdraw_vouchers_link_hash"),
                                      "length(link_hash) = 64")


def downgrade() -> None:
    with op.batch_alter_table("lnurl_withdraw_vouchers") as batch:
        batch.drop_constraint(op.f("ck_lnurl_withdraw_vouchers_link_hash"), type_="check")
        batch.drop_constraint("uq_lnurl_withdraw_vouchers_link_hash", type_="unique")
        batch.drop_column("link_hash")
