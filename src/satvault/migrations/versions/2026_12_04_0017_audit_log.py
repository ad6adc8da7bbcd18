"""audit_events becomes the hash-chained audit log (issue 12 §6): subject → object, details →
state_after, a state_before, and the chain's seq / prev_hash / hash (NULL until sealed);
triggers that refuse UPDATE and DELETE on audit_events (but the sealer's one-time setting of
the chain columns) and on ledger_transfers (but a pending hold's state being resolved).

Existing rows keep their ids and are left unsealed: the first sealing round (the audit worker,
or ``satvault audit seal``) chains them in id order, like any new row.

Revision ID: 0017_audit_log (its parent: down_revision below)
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_audit_log"
down_revision: str | None = "0016_liabilities"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AUDIT_COLS = ("id", "at", "actor", "action", "object", "state_before", "state_after")
_TRANSFER_COLS = (
    "seq", "id", "debit_account_id", "credit_account_id", "amount", "asset", "kind",
    "pending_id", "timeout_seconds", "expires_at", "linked", "code", "ref", "created_at",
    "dr_debits_posted", "dr_credits_posted", "dr_debits_pending", "dr_credits_pending",
    "cr_debits_posted", "cr_credits_posted", "cr_debits_pending", "cr_credits_pending")
_AUDIT_REFUSED = "audit_events is append-only: UPDATE and DELETE are refused"
_LEDGER_REFUSED = ("ledger_transfers is append-only: DELETE is refused, and UPDATE may only "
                   "resolve the state of a pending hold")


def _same(cols: Sequence[str], op_: str) -> str:
    return " AND ".join(f"NEW.{c} {op_} OLD.{c}" for c in cols)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute("ALTER TABLE audit_events RENAME COLUMN subject TO object")
    op.execute("ALTER TABLE audit_events RENAME COLUMN details TO state_after")
    op.add_column("audit_events", sa.Column("state_before", sa.Text, nullable=False,
                                            server_default="null"))
    op.add_column("audit_events", sa.Column("seq", sa.BigInteger, nullable=True))
    op.add_column("audit_events", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("audit_events", sa.Column("hash", sa.String(64), nullable=True))
    op.create_index("ux_audit_events_seq", "audit_events", ["seq"], unique=True)
    op.create_index("ix_audit_events_action", "audit_events", ["action", "id"])
    unsealed = sa.text("seq IS NULL")
    op.create_index("ix_audit_events_unsealed", "audit_events", ["id"],
                    postgresql_where=unsealed, sqlite_where=unsealed)
    # Existing rows: details held what was written, i.e. the "after" of the action.
    sealing = ("OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL "
               "AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL")
    resolving = "OLD.state = 'pending' AND NEW.state IS NOT NULL"
    if sqlite:
        op.execute(f"""CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
            BEGIN SELECT RAISE(ABORT, '{_AUDIT_REFUSED}'); END""")
        op.execute(f"""CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
            WHEN NOT ({sealing} AND {_same(_AUDIT_COLS, 'IS')})
            BEGIN SELECT RAISE(ABORT, '{_AUDIT_REFUSED}'); END""")
        op.execute(f"""CREATE TRIGGER ledger_transfers_no_delete BEFORE DELETE
            ON ledger_transfers BEGIN SELECT RAISE(ABORT, '{_LEDGER_REFUSED}'); END""")
        op.execute(f"""CREATE TRIGGER ledger_transfers_no_update BEFORE UPDATE
            ON ledger_transfers WHEN NOT ({resolving} AND {_same(_TRANSFER_COLS, 'IS')})
            BEGIN SELECT RAISE(ABORT, '{_LEDGER_REFUSED}'); END""")
        return
    op.execute(f"""CREATE FUNCTION audit_events_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND {sealing}
               AND {_same(_AUDIT_COLS, 'IS NOT DISTINCT FROM')} THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '{_AUDIT_REFUSED}' USING ERRCODE = 'restrict_violation';
        END $$""")
    op.execute("""CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE
        ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()""")
    op.execute(f"""CREATE FUNCTION ledger_transfers_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND {resolving}
               AND {_same(_TRANSFER_COLS, 'IS NOT DISTINCT FROM')} THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '{_LEDGER_REFUSED}' USING ERRCODE = 'restrict_violation';
        END $$""")
    op.execute("""CREATE TRIGGER ledger_transfers_append_only BEFORE UPDATE OR DELETE
        ON ledger_transfers FOR EACH ROW EXECUTE FUNCTION ledger_transfers_append_only()""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("audit_events_no_delete", "audit_events_no_update",
                     "ledger_transfers_no_delete", "ledger_transfers_no_update"):
            op.execute(f"DROP TRIGGER {name}")
    else:
        for tbl in ("audit_events", "ledger_transfers"):
            op.execute(f"DROP TRIGGER {tbl}_append_only ON {tbl}")
            op.execute(f"DROP FUNCTION {tbl}_append_only()")
    for ix in ("ix_audit_events_unsealed", "ix_audit_events_action", "ux_audit_events_seq"):
        op.drop_index(ix, table_name="audit_events")
    for col in ("hash", "prev_hash", "seq", "state_before"):
        op.drop_column("audit_events", col)
    op.execute("ALTER TABLE audit_events RENAME COLUMN state_after TO details")
    op.execute("ALTER TABLE audit_events RENAME COLUMN object TO subject")
