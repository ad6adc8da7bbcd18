"""a withdrawal wakes the payout job and the Lightning payer only when it queues work for them
(issue 10): inserted as, or moved to, ``pending``

Migration 0028's statement-level trigger sent ``NOTIFY satvault_work 'withdrawals'`` for every
INSERT into ``withdrawals``. An internal payment inserts its withdrawal already
``confirmed`` (settled inside the ledger), so at 80 payments/s both workers woke ~80 times a
second to find nothing to do: about half the server's CPU per internal payment in
``benchmarks/api.py`` (10.4 ms per payment for the whole server against 5.0 ms for the API
process alone), and their queries on the database besides.

Now two row-level triggers with a WHEN condition (evaluated without calling the function):
a row inserted as ``pending`` (what the payout job batches and the payer sends), and a row
whose status becomes ``pending`` (an approval or a released review, in any process: before,
such a row waited for the workers' next tick). Withdrawals held for review or approval, and
settled ones, wake nobody; PostgreSQL folds the identical notifications of one transaction
into one. ``ln_payments`` and ``webhook_deliveries`` keep 0028's trigger: every row
inserted there is work.

Revision ID: 0038_withdrawals_wake_on_work
Revises: 0037_risk_features_history
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0038_withdrawals_wake_on_work"
down_revision: str | None = "0037_risk_features_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER withdrawals_notify_work ON withdrawals")
    op.execute("CREATE TRIGGER withdrawals_notify_work AFTER INSERT ON withdrawals "
               "FOR EACH ROW WHEN (NEW.status = 'pending') "
               "EXECUTE FUNCTION satvault_notify_work()")
    op.execute("CREATE TRIGGER withdrawals_notify_pending AFTER UPDATE OF status ON withdrawals "
               "FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status <> 'pending') "
               "EXECUTE FUNCTION satvault_notify_work()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER withdrawals_notify_pending ON withdrawals")
    op.execute("DROP TRIGGER withdrawals_notify_work ON withdrawals")
    op.execute("CREATE TRIGGER withdrawals_notify_work AFTER INSERT ON withdrawals "
               "FOR EACH STATEMENT EXECUTE FUNCTION satvault_notify_work()")
