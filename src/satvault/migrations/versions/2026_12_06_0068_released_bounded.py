"""PostgreSQL: every statement reading withdrawals released in a window bounds the release
on both sides, so a generic plan keeps to the released withdrawals' partial index

``released_at`` is set only on a withdrawal held for review and released (0050), and
``ix_withdrawals_wallet_released`` holds just those rows. The statements on generic plans
(0061's limits, 0067's screening) compare it with a parameter, whose selectivity a generic
plan cannot know: PostgreSQL takes a third of the wallet's rows, whatever share of them are
NULL, and costs the partial index's heap fetches for that many (an index's predicate, here
``released_at IS NOT NULL``, does not enter the estimate; stating it beside the comparison
does not either, as measured). The partial index and a scan of all the wallet's withdrawals
filtered on the release then cost about the same (186 against 188 for a wallet of 3,750), and
which one a plan took moved with each ANALYZE's sample: the screening of a wallet with 6,000
payments read 800 buffers instead of 270 when it took the scan, the 6,000 rows once per
window (``test_a_busier_wallets_screening_and_limits_read_no_more`` failed in CI).

A comparison bounded on both sides is estimated as a narrow range (PostgreSQL's default
0.5%) instead of a third, so ``released_at < 'infinity'`` beside it, true of every release,
makes the partial index the cheap plan by a wide margin (38 against 188 for the same
wallet). Every function whose body compares ``<alias>.released_at >=`` is rewritten alike
(the windows' money out, their destinations, the limits' sums, the structuring band, the
person's windows), by its text as the server prints it; the downgrade takes it back.

Revision ID: 0068_released_bounded
Revises: 0067_person_risk_windows
Create Date: 2026-12-06
"""

import re
from collections.abc import Sequence

from alembic import op

revision: str = "0068_released_bounded"
down_revision: str | None = "0067_person_risk_windows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BARE = re.compile(r"\b(\w+)\.released_at >= ")
_BOUND = "{0}.released_at < 'infinity'::timestamp with time zone AND "
_BOUNDED = re.compile(
    r"\b(\w+)\.released_at < 'infinity'::timestamp with time zone AND (?=\1\.released_at >= )")


def _functions() -> list[str]:
    """The definitions (CREATE OR REPLACE, as the server prints them) of this schema's
    functions that compare a release with ``>=``."""
    return list(op.get_bind().exec_driver_sql(
        "SELECT pg_get_functiondef(p.oid) FROM pg_proc p "
        "WHERE p.pronamespace = current_schema()::regnamespace "
        "AND p.prosrc LIKE '%released_at >= %' ORDER BY p.proname").scalars())


def _bounded(match: re.Match[str]) -> str:
    before = match.string[max(0, match.start() - 4):match.start()]
    assert before != "NOT ", "a negated release comparison: rewrite it by hand"
    return _BOUND.format(match[1]) + match[0]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite plans each statement with its values
    for found in _functions():
        if _BOUNDED.search(found) is None:
            op.execute(_BARE.sub(_bounded, found))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for found in _functions():
        op.execute(_BOUNDED.sub("", found))
