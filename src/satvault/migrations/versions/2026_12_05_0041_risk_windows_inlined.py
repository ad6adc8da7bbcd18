"""the screening's rapid-movement sum and structuring band read as windows of their own,
planned with the rest of the statement (issue 10)

Migration 0040 read the money in of the structuring band's window and of the rapid-movement
window from the 7-day and the 1-hour window when they are the same, and otherwise with a
scalar subquery calling ``risk_in_window`` in the select list. That subquery is not inlined
by the planner (by the time it is planned, the mark it is given has become the mark's own
subquery): ``risk_in_window`` then ran as a function call of its own, its statement parsed and
planned on every screening. With the default rule set (a 30-minute rapid window, not the
hour) that was every screening: ~0.45 ms of planning and ~0.9 ms in all of ~2.1 ms per call
of ``risk_screen_features``, measured with ``pg_stat_statements`` on a payer with 1,550
payments (200 calls in one session, medians of two runs).

Both are now two more ``CROSS JOIN LATERAL risk_in_window(...)`` windows, inlined like the
four others, always read: ~1.25 ms per call whatever the rule set's windows, against 2.0 ms
(30-minute rapid window) and 1.1 ms (a 60-minute one, where the reuse saved the subquery);
``benchmarks/risk_history.py`` (3,000 payments and 3,000 credits): 2.92 -> 1.88 ms and
1.71 -> 1.88 ms of server time. A
gated ``LEFT JOIN LATERAL`` (computed only when the window differs) was tried and planned
badly (24 ms per call). The results are the same (``tests/risk/test_credit_rollups.py``
compares the function with the row-by-row query on equal and different windows).

Revision ID: 0041_risk_windows_inlined
Revises: 0040_risk_credit_rollups
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from typing import Any

from alembic import op

from satvault.migrations.siblings import load

revision: str = "0041_risk_windows_inlined"
down_revision: str | None = "0040_risk_credit_rollups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0040's reuse of the 7-day and 1-hour windows, and what replaces each: a window of its own.
# (name, since, the window 0040 reused, the column read, its cast, the feature)
_OWN_WINDOWS = (
    ("band", "greatest(p_s_since, p_since)", "7d", "band", "bigint", "in.band"),
    ("rapid", "greatest(p_r_since, p_since)", "1h", "total", "float8", "in.rapid"),
)
_LAST_JOIN = ("CROSS JOIN LATERAL risk_in_window(p_account, p_since_30d, mk.mark, p_low, "
              "p_top) AS w30d")


def _previous() -> Any:
    """Migration 0040's module (its body, and 0039's function replacement through it)."""
    return load("2026_12_05_0040_risk_credit_rollups.py")


def _body(previous: Any) -> str:
    earlier = previous._earlier()
    body: str = previous._body(earlier)
    joins = [_LAST_JOIN]
    for name, since, shared, column, cast, label in _OWN_WINDOWS:
        reused = (f"(CASE WHEN {since} = p_since_{shared} THEN w{shared}.{column} ELSE "
                  f"(SELECT x.{column} FROM risk_in_window(p_account, {since}, mk.mark, "
                  f"p_low, p_top) AS x) END)::{cast} AS \"{label}\"")
        assert body.count(reused) == 1, name
        body = body.replace(reused, f'w_{name}.{column}::{cast} AS "{label}"')
        joins.append(f"CROSS JOIN LATERAL risk_in_window(p_account, {since}, mk.mark, "
                     f"p_low, p_top) AS w_{name}")
    assert body.count(_LAST_JOIN) == 1
    return body.replace(_LAST_JOIN, "\n        ".join(joins))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    previous = _previous()
    earlier = previous._earlier()
    earlier._replace_function(earlier._earlier(), _body(previous))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    previous = _previous()
    earlier = previous._earlier()
    earlier._replace_function(earlier._earlier(), previous._body(earlier))
