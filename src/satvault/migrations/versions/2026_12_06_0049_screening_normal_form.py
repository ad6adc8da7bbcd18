"""screening_entries.normalized again, in the normal form that now keeps letters of every
script, folds look-alikes of Latin letters (Cyrillic, Greek, Armenian, Latin small capitals,
IPA) and drops invisible characters (every mark, format characters, the Hangul fillers and
the Braille blank): a name loaded before, in Cyrillic say, was stored as the empty form,
which no screening ever hits, and one with a look-alike or an invisible mark inside was
stored in a form its listed spelling never met

The form is ``satvault.kyc.screening.normalize``'s when this was written, copied here so the
migration means the same thing later. Nothing to undo: the old form is what it replaces.

Revision ID: 0049_screening_normal_form
Revises: 0048_risk_list_case
Create Date: 2026-12-06
"""

import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0049_screening_normal_form"
down_revision: str | None = "0048_risk_list_case"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOT_WORD = re.compile(r"[\W_]+")
_LOOKALIKE = str.maketrans(
    "\u0430\u0432\u0435\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443"
    "\u0445\u0455\u0456\u0458\u04bb\u0501\u051b\u051d\u04cf\u04af"
    "\u03b1\u03b2\u03b5\u03b6\u03b7\u03b9\u03ba\u03bc\u03bd\u03bf\u03c1\u03c4"
    "\u03c5\u03c7"
    "\u0131\u0237\u0251\u0261\u0269\u026a\u028f\u029c\u0274\u0280\u0299\u0262"
    "\u029f\u1d00\u1d04\u1d05\u1d07\u1d0a\u1d0b\u1d0d\u1d0f\u1d18\u1d1b\u1d1c"
    "\u1d20\u1d21\u1d22\ua731\u03c3\u03f3\u0585\u057d\u0578\u0570\u0581\u0566",
    "abekmhopctyxsijhdqwly" "abezhikmnoptyx" "ijagiiyhnrbglacdejkmoptuvwzsojounhgq")
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _normalize(name: str) -> str:
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if unicodedata.category(c)[0] != "M"
                   and unicodedata.category(c) != "Cf" and c not in _BLANKS).casefold()
    text = text.translate(_LOOKALIKE)
    return " ".join(sorted(t for t in _NOT_WORD.split(text) if t))


def upgrade() -> None:
    conn = op.get_bind()
    for row in conn.execute(sa.text("SELECT id, name, normalized FROM screening_entries")).all():
        form = _normalize(row.name)[:300]
        if form != row.normalized:
            conn.execute(sa.text("UPDATE screening_entries SET normalized = :n WHERE id = :id"),
                         {"n": form, "id": row.id})


def downgrade() -> None:
    pass
