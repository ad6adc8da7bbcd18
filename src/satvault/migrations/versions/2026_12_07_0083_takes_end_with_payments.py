"""a take of our invoice ends with its payment: its row goes when the invoice leaves ``open``

Migration 0082 kept each take two minutes and counted as in flight those whose invoice was
still ``open``: every take read all the person's takes of the last two minutes to find the
few in flight. A busy payer's take then read its last two minutes of payments (at 50
payments a second, 6,000 rows each), and the database's CPU per internal payment more than
doubled (measured in ``benchmarks/api.py``: 11.6 ms against ~4.7 before 0082). A trigger on
``ln_invoices`` now deletes the take when its invoice's status leaves ``open`` (paid,
cancelled, reserved for review, expired): in the unit of work that decides the payment, with
no statement of its own. What a take reads is then the takes in flight, and those a process
that stopped left behind (which lapse after two minutes, as before). Its checks are
unchanged: each counted only takes whose invoice was ``open``.

Revision ID: 0083_takes_end_with_payments
Revises: 0082_ln_takes
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0083_takes_end_with_payments"
down_revision: str | None = "0082_ln_takes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG = [
    """
    CREATE FUNCTION ln_take_end() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        DELETE FROM ln_takes WHERE payment_hash = NEW.payment_hash;
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
    DELETE FROM ln_takes t USING ln_invoices i
     WHERE i.payment_hash = t.payment_hash AND i.status <> 'open'
    """,
]

_SQLITE = [
    """
    CREATE TRIGGER ln_take_end AFTER UPDATE OF status ON ln_invoices FOR EACH ROW
    WHEN OLD.status = 'open' AND NEW.status <> 'open'
    BEGIN
        DELETE FROM ln_takes WHERE payment_hash = NEW.payment_hash;
    END
    """,
    """
    DELETE FROM ln_takes WHERE payment_hash IN (
        SELECT payment_hash FROM ln_invoices WHERE status <> 'open')
    """,
]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in _SQLITE if sqlite else _PG:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER ln_take_end")
    else:
        op.execute("DROP TRIGGER ln_take_end ON ln_invoices")
        op.execute("DROP FUNCTION ln_take_end()")
