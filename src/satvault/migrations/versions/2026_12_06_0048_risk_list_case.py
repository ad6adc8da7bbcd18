"""risk_address_labels: bech32 addresses, node keys, Lightning Addresses and LNURLs in lower
case, the form the screening looks them up in (an entry loaded in upper case, valid as
written, was never matched: a sanctioned address listed as ``BC1Q…`` let a withdrawal to
``bc1q…`` through)

Lists loaded from now on are stored that way (``satvault.risk.lists.canonical_address``);
this brings rows loaded before it into the same form. Where a list held both forms of one
address under one label, the lower-case row is kept. Base58 addresses are case-sensitive and
are not touched. Nothing to undo: the lower-case form names the same address.

Revision ID: 0048_risk_list_case
Revises: 0047_voucher_link_tokens
Create Date: 2026-12-06
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0048_risk_list_case"
down_revision: str | None = "0047_voucher_link_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HRPS = ("bc", "tb", "bcrt")
_HEX = frozenset("0123456789abcdef")
_LN_ADDRESS = re.compile(r"[a-z0-9._+-]+@[a-z0-9.-]+(:\d{1,5})?")  # LUD-16, a port too


def _canonical(text: str) -> str:
    # A copy of satvault.risk.lists.canonical_address as it was when this was written.
    text = text.strip()
    low = text.lower()
    if low.startswith("lightning:") and (
            low[10:].startswith("lnurl1") or _LN_ADDRESS.fullmatch(low[10:])):
        return low[10:]
    if len(low) == 66 and set(low) <= _HEX:
        return low
    if _LN_ADDRESS.fullmatch(low) or (low.startswith("lnurl1") and text in (low, text.upper())):
        return low
    if "1" in low and low.rsplit("1", 1)[0] in _HRPS and text in (low, text.upper()):
        return low
    return text


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT id, address, label FROM risk_address_labels")).all()
    taken = {(r.address, r.label) for r in rows}
    for r in rows:
        canonical = _canonical(r.address)
        if canonical == r.address:
            continue
        if (canonical, r.label) in taken:
            conn.execute(sa.text("DELETE FROM risk_address_labels WHERE id = :id"),
                         {"id": r.id})
            continue
        conn.execute(sa.text("UPDATE risk_address_labels SET address = :a WHERE id = :id"),
                     {"a": canonical, "id": r.id})
        taken.add((canonical, r.label))


def downgrade() -> None:
    pass
