"""the limits' and the screening's PL/pgSQL functions say they return one row (issue 10), so
the payment's guarded withdrawal INSERT settles on one plan instead of being planned again on
every payment

``withdrawal_usage`` (the limits' sums, called in the FROM of the internal payment's guarded
``INSERT … SELECT``, migration 0018, body of 0039) and ``risk_screen_features`` (the
screening, migration 0035, body of 0041) return exactly one row, but a set-returning
function is estimated at 1,000 rows unless it says otherwise. The INSERT's guard filters
that function scan with the KYC tier's limits, ``CASE`` expressions over bound parameters:
folded to constants in a custom plan, evaluated per estimated row in the generic one. The
generic plan thus cost 97.96 against 64.76, more than the planning a custom plan costs, and
PostgreSQL planned the statement again on every execution (~0.15 to 0.29 ms of planning under
the payer's row lock, seen as the statement's ``bind`` in the server log). At one row both
cost ~24.8, and from the sixth execution on a connection the statement runs on its generic
plan (planning ~0.02 ms). ``tests/payouts/test_limit_plan.py`` reads
``pg_prepared_statements`` to show it.

A later ``CREATE OR REPLACE FUNCTION`` of either resets the estimate to 1,000 unless it says
``ROWS 1`` again; the test would fail.

Revision ID: 0042_one_row_functions
Revises: 0041_risk_windows_inlined
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0042_one_row_functions"
down_revision: str | None = "0041_risk_windows_inlined"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTIONS = (
    "withdrawal_usage(varchar, varchar, timestamptz, timestamptz)",
    "risk_screen_features",
)


def _alter(rows: int) -> None:
    for function in _FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} ROWS {rows}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has no such functions
    _alter(1)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _alter(1000)
