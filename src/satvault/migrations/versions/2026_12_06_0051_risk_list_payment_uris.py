"""risk_address_labels: an entry written as a BIP21 payment URI (``bitcoin:BC1Q…?amount=1``)
stored as the address it names, in the form the screening looks addresses up in

Such an entry was stored as written and never matched a screened address. Lists loaded from
now on are stored that way (``satvault.risk.lists.canonical_address``); this brings rows
loaded before into the same form. Where the list holds the address under the same label
already, the URI's row goes. A URI that names no address names nothing and goes too. Nothing
to undo: the address is what the URI named.

Revision ID: 0051_risk_list_payment_uris
Revises: 0050_held_withdrawal_limits
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0051_risk_list_payment_uris"
down_revision: str | None = "0050_held_withdrawal_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HRPS = ("bc", "tb", "bcrt")


def _address(uri: str) -> str:
    # satvault.risk.lists.canonical_address of a payment URI, as it was when this was written
    # (no URI names a node key, a Lightning Address or an LNURL).
    text = uri.strip()[len("bitcoin:"):].removeprefix("//").partition("?")[0].strip()
    low = text.lower()
    if "1" in low and low.rsplit("1", 1)[0] in _HRPS and text in (low, text.upper()):
        return low
    return text


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT id, address, label FROM risk_address_labels")).all()
    taken = {(r.address, r.label) for r in rows}
    for r in rows:
        if not r.address.lower().startswith("bitcoin:"):
            continue
        address = _address(r.address)
        if not address or (address, r.label) in taken:
            conn.execute(sa.text("DELETE FROM risk_address_labels WHERE id = :id"),
                         {"id": r.id})
            continue
        conn.execute(sa.text("UPDATE risk_address_labels SET address = :a WHERE id = :id"),
                     {"a": address, "id": r.id})
        taken.add((address, r.label))


def downgrade() -> None:
    pass
