"""the screening's fold of a wallet's credits reads the credits after its mark, not the
account's whole history and the next account's (issue 10)

Migration 0040's ``risk_in_fold`` selected the credits to fold with two row comparisons,
``(credit_account_id, seq) > (account, mark) AND (credit_account_id, seq) < (account + 1,
0)``, meant as one range of ``ix_ledger_transfers_credit``. On a database with statistics
its (generic) plan is instead a scan of ``ix_ledger_transfers_credit_window`` on
``credit_account_id BETWEEN account AND account + 1`` with the row comparisons as a filter:
every screening fetched every credit the wallet ever had *and* every credit of the account
numbered next to it. Seen in the internal-payment benchmark (the payer's fold, with nothing
to fold, 0.30 ms on average and 2.75 ms at most, growing as the payee numbered next to it
was paid) and on its kept database (an account with no credits: 1,530 rows of its neighbour
removed by the filter, 0.66 ms).

The same two row comparisons with ``credit_account_id >= account AND credit_account_id <=
account`` beside them: the account's bounds are then index conditions of both indexes, and
``ix_ledger_transfers_credit``, where the row comparisons are index conditions too, is the
cheaper one in every state tried (few or many accounts in the statistics, visibility map
set or not): an index-only scan of this account's entries, none of another account's, no
row fetched but to check its visibility (0.03 ms on the kept database; there, after a mark
among 1,530 credits, 9 buffers for the 5 credits past it: the scan starts at the mark).
Forms tried and not kept: ``credit_account_id = account AND seq > mark`` (with statistics
of few accounts, a walk of the primary key from the mark through every account's
transfers), and the equality beside the lower row comparison (the equality becomes the
scan's start, so the fold read all of the account's entries: 43 buffers more for 4,500 more
credits in ``test_a_busier_wallets_screening_and_limits_read_no_more``).
``tests/risk/test_credit_rollups.py`` measures the fold with 3,001 credits and a neighbour
with 3,000, the table analysed and not vacuumed: 27 buffers, against 6,022 before.

Revision ID: 0043_fold_range
Revises: 0042_one_row_functions
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

from satvault.migrations.siblings import load

revision: str = "0043_fold_range"
down_revision: str | None = "0042_one_row_functions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW_COMMENT = """\
    -- The credits drawn after the mark: one range of ix_ledger_transfers_credit
    -- (credit_account_id, seq), which carries the columns read (INCLUDE). The account's
    -- bounds beside the row comparisons keep the planner on it (migration 0043: without
    -- them, with statistics, it scanned ix_ledger_transfers_credit_window for this account
    -- and the next one whole, fetching every row)."""
_OLD_RANGE = """\
         WHERE (t.credit_account_id, t.seq) > (p_account, coalesce(
                   (SELECT k.seq FROM risk_in_marks k WHERE k.account_id = p_account), 0))
           AND (t.credit_account_id, t.seq) < (p_account + 1, 0)
         ORDER BY t.credit_account_id, t.seq"""
_NEW_RANGE = """\
         WHERE t.credit_account_id >= p_account AND t.credit_account_id <= p_account
           AND (t.credit_account_id, t.seq) > (p_account, coalesce(
                   (SELECT k.seq FROM risk_in_marks k WHERE k.account_id = p_account), 0))
           AND (t.credit_account_id, t.seq) < (p_account + 1, 0)
         ORDER BY t.credit_account_id, t.seq"""


_COMMENT_FROM, _COMMENT_TO = "    -- The credits drawn after the mark", "    WITH fresh AS"


def _fold_0040() -> str:
    """``risk_in_fold`` as migration 0040 created it, as CREATE OR REPLACE."""
    functions: str = load("2026_12_05_0040_risk_credit_rollups.py")._FUNCTIONS
    start = functions.index("CREATE FUNCTION risk_in_fold(")
    end = functions.index("$fn$;", start) + len("$fn$;")
    fold = functions[start:end]
    assert _OLD_RANGE in fold and _COMMENT_FROM in fold, "0040's fold changed: update 0043"
    return fold.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _fold_0043() -> str:
    """0040's fold with the range of this migration, and its comment on the range."""
    fold = _fold_0040().replace(_OLD_RANGE, _NEW_RANGE)
    start, end = fold.index(_COMMENT_FROM), fold.index(_COMMENT_TO)
    return fold[:start] + _NEW_COMMENT + "\n" + fold[end:]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite reads the credits themselves
    op.execute(_fold_0043())


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_fold_0040())
