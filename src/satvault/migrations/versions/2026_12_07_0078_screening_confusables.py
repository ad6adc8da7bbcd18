"""screening_entries.normalized again, in the normal form that now folds Unicode's
confusables (UTS #39) besides its own table and drops private-use and unassigned characters:
a name loaded with a letter Unicode does not decompose (``Łukasz``, ``Søren``) was stored
with it, so its plain spelling never met it, nor it the plain spelling of a listed name

The stored form is a cache of what screening compares, so unlike 0049 this revision writes
``satvault.kyc.screening.normalize``'s form of the day it runs: any later revision that
changes the form writes it again. Nothing to undo: the old form is what it replaces.

Revision ID: 0078_screening_confusables
Revises: 0077_voucher_initiator
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from satvault.kyc.screening import normalize

revision: str = "0078_screening_confusables"
down_revision: str | None = "0077_voucher_initiator"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    conn = op.get_bind()
    for row in conn.execute(sa.text("SELECT id, name, normalized FROM screening_entries")).all():
        form = normalize(row.name)[:300]
        if form != row.normalized:
            conn.execute(sa.text("UPDATE screening_entries SET normalized = :n WHERE id = :id"),
                         {"n": form, "id": row.id})


def downgrade() -> None:
    pass
