"""screening_entries.normalized again, in the normal form that also drops every mark (a
variation selector or the combining grapheme joiner has no combining class, so it was kept and
split a word in two) and the blank letters (Hangul fillers, the Braille blank)

The form is ``satvault.kyc.screening.normalize``'s when this was written, copied here so the
migration means the same thing later. Nothing to undo: the old form is what it replaces.

Revision ID: 0050_screening_invisible_marks
Revises: 0049_screening_normal_form
Create Date: 2026-12-06
"""

import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0050_screening_invisible_marks"
down_revision: str | None = "0049_screening_normal_form"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOT_WORD = re.compile(r"[\W_]+")
_LOOKALIKE = str.maketrans(
    "\u0430\u0432\u0435\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443"
    "\u0445\u0455\u0456\u0458\u04bb\u0501\u051b\u051d\u04cf\u04af"
    "\u03b1\u03b2\u03b5\u03b6\u03b7\u03b9\u03ba\u03bc\u03bd\u03bf\u03c1\u03c4"
    "\u03c5\u03c7", "abekmhopctyxsijhdqwly" "abezhikmnoptyx")
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
