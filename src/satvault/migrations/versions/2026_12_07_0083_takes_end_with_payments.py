"""a take of our invoice is over with its payment: marked done when the invoice leaves ``open``

Migration 0082 kept each take two minutes and counted as in flight those whose invoice was
still ``open``: every take read all the person's takes of the last two minutes to find the
few in flight. A busy payer's take then read its last two minutes of payments (at 50
payments a second, 6,000 rows each), and the database's CPU per internal payment doubled
over a minute of payments (``benchmarks/api.py``, docs/benchmarks.md). A trigger on
``ln_invoices`` now marks the take ``done`` when its invoice's status leaves ``open`` (paid,
cancelled, reserved for review, expired), in the unit of work that decides the payment, with
no statement of its own, and the takes in flight are read through a partial index of those
not done: what a take reads is the takes in flight (and those a process that stopped left
behind, which lapse after two minutes, as before).

A done take keeps its Idempotency-Key for two minutes: a payment with the same key for
another invoice is refused before that invoice leaves the node, in flight or just done
(found in CI: the first payment done between a second one's read of the key, still unused,
and its take, the second took another invoice off the node before the key's answer refused
it). Through an index on the key's digest.

Revision ID: 0083_takes_end_with_payments
Revises: 0082_ln_takes
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from satvault.migrations.siblings import load

revision: str = "0083_takes_end_with_payments"
down_revision: str | None = "0082_ln_takes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ln_take as 0082 wrote it (read from that migration), with the takes in flight read among
# those not done, the key's check over every take of the last two minutes, and a take made
# again (its process stopped) not done.
_LIVE_0082 = """\
    SELECT count(*), count(*) FILTER (WHERE p_request <> '' AND t.request = p_request),
           coalesce(sum(t.amount_msat) FILTER (WHERE t.wallet_id = p_wallet), 0)
      INTO v_live, v_same_request, v_held
      FROM ln_takes t JOIN ln_invoices i ON i.payment_hash = t.payment_hash
     WHERE t.person = v_person AND t.at >= p_live_since AND i.status = 'open';
    IF v_same_request > 0 THEN
        RETURN 'same-request';
    END IF;"""
_LIVE = """\
    SELECT count(*), coalesce(sum(t.amount_msat) FILTER (WHERE t.wallet_id = p_wallet), 0)
      INTO v_live, v_held
      FROM ln_takes t JOIN ln_invoices i ON i.payment_hash = t.payment_hash
     WHERE t.person = v_person AND NOT t.done AND t.at >= p_live_since
       AND i.status = 'open';
    -- The caller's key on another invoice's take, in flight or just done: refused before
    -- this invoice leaves the node (the key's answer is the other payment's).
    IF p_request <> '' AND EXISTS (SELECT 1 FROM ln_takes t
                                    WHERE t.request = p_request AND t.payment_hash <> p_hash
                                      AND t.at >= p_live_since) THEN
        RETURN 'same-request';
    END IF;"""
_SET_0082 = "request = excluded.request, at = excluded.at\n"
_SET = "request = excluded.request, at = excluded.at,\n           done = false\n"


def _functions() -> tuple[str, str]:
    """(0082's ln_take, this migration's), each as a CREATE OR REPLACE."""
    before = load("2026_12_07_0082_ln_takes.py")._TAKE.replace(
        "CREATE FUNCTION ln_take(", "CREATE OR REPLACE FUNCTION ln_take(")
    after = before.replace("    v_same_request integer;\n", "")
    for old, new in ((_LIVE_0082, _LIVE), (_SET_0082, _SET)):
        assert after.count(old) == 1, old
        after = after.replace(old, new)
    return before, after


_PG = [
    """
    CREATE FUNCTION ln_take_end() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        UPDATE ln_takes SET done = true WHERE payment_hash = NEW.payment_hash AND NOT done;
        RETURN NULL;
    END
    $fn$
    """,
    """
    CREATE TRIGGER ln_take_end AFTER UPDATE OF status ON ln_invoices FOR EACH ROW
    WHEN (OLD.status = 'open' AND NEW.status <> 'open') EXECUTE FUNCTION ln_take_end()
    """,
    # The takes already over.
    """
    UPDATE ln_takes t SET done = true FROM ln_invoices i
     WHERE i.payment_hash = t.payment_hash AND i.status <> 'open'
    """,
]

_SQLITE = [
    """
    CREATE TRIGGER ln_take_end AFTER UPDATE OF status ON ln_invoices FOR EACH ROW
    WHEN OLD.status = 'open' AND NEW.status <> 'open'
    BEGIN
        UPDATE ln_takes SET done = 1 WHERE payment_hash = NEW.payment_hash AND NOT done;
    END
    """,
    """
    UPDATE ln_takes SET done = 1 WHERE payment_hash IN (
        SELECT payment_hash FROM ln_invoices WHERE status <> 'open')
    """,
]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("ln_takes", sa.Column("done", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.create_index("ix_ln_takes_live", "ln_takes", ["person", "at"],
                    postgresql_where=sa.text("NOT done"), sqlite_where=sa.text("NOT done"))
    op.create_index("ix_ln_takes_request", "ln_takes", ["request", "at"],
                    postgresql_where=sa.text("request <> ''"),
                    sqlite_where=sa.text("request <> ''"))
    for statement in _SQLITE if sqlite else [*_PG, _functions()[1]]:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER ln_take_end")
    else:
        op.execute("DROP TRIGGER ln_take_end ON ln_invoices")
        op.execute("DROP FUNCTION ln_take_end()")
        op.execute(_functions()[0])
    op.drop_index("ix_ln_takes_request", table_name="ln_takes")
    op.drop_index("ix_ln_takes_live", table_name="ln_takes")
    op.drop_column("ln_takes", "done")
