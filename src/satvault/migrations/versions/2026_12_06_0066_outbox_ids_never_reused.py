"""SQLite: the outbox's ids are never handed out twice (AUTOINCREMENT), so they can be moved
past every id issued before a database restore

An event's id is what webhook receivers, event-stream clients (``Last-Event-ID``) and
JetStream's duplicate window (``Nats-Msg-Id``) tell events apart by. After a restore the ids
continued from the backup's last one, so ids already delivered came back naming other events,
and receivers that drop ids they have seen dropped them. ``satvault restore`` and ``satvault
events rebase-ids`` now move the next id past a floor taken from the clock
(:mod:`satvault.events.ids`). PostgreSQL's sequence can be moved as it is; SQLite hands out
``max(rowid) + 1`` unless the table is ``AUTOINCREMENT``, whose high-water mark
(``sqlite_sequence``) can be raised, so the table is rebuilt with it. Nothing changes on
PostgreSQL.

Revision ID: 0066_outbox_ids_never_reused
Revises: 0064_reserved_invoices
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0066_outbox_ids_never_reused"
down_revision: str | None = "0064_reserved_invoices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # webhook_deliveries.event_id refers to the table by name: checked at commit, when the
    # rebuilt table has the name again (foreign_keys cannot be switched off in a transaction)
    op.execute("PRAGMA defer_foreign_keys = ON")
    with op.batch_alter_table("outbox_events", recreate="always",
                              table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
