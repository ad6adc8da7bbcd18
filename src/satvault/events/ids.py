"""Event ids after a database restore: moved past every id issued before it.

An event's id is what tells events apart downstream: webhook receivers deduplicate on
``Satvault-Event-Id``, event-stream clients resume after ``Last-Event-ID``, and JetStream drops
a ``Nats-Msg-Id`` it has seen within its duplicate window. The ids come from a counter in the
database (PostgreSQL's serial sequence, SQLite's ``AUTOINCREMENT`` high-water mark), so a
database restored from a backup hands out again the ids issued between the backup and the
restore, for other events, and those are dropped as duplicates.

:func:`rebase_event_ids` moves the counter to at least a floor taken from the clock,
``unix milliseconds * 1000``, never backwards. Every id issued before the restore was below
the floor of the moment it was issued at (the first rebase lifts the counter from small
numbers, and any later lineage stays under its own floor as long as it issues fewer than
1,000 ids per millisecond on average, a million a second), so the ids after it are new to
every receiver. The ids stay integers in order and below 2^53 (JavaScript's exact integers)
until the year 2255. ``satvault restore`` runs it; ``satvault events rebase-ids`` does it for
a database restored by other means (``pg_restore``, a point-in-time recovery, a promoted
replica), before satvault starts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.events.errors import EventsError

__all__ = ["IdsNotMovable", "Rebased", "id_floor", "rebase_event_ids"]

PER_MILLISECOND = 1000


class IdsNotMovable(EventsError):
    """The database cannot have its event ids moved (a SQLite outbox from before 0066)."""


@dataclass(frozen=True, slots=True)
class Rebased:
    before: int  # the last id the counter had handed out (or the largest id present)
    after: int   # the counter's new position: the next event gets ``after + 1``

    def as_dict(self) -> dict[str, Any]:
        return {"last_id_before": self.before, "next_id": self.after + 1,
                "moved": self.after > self.before}


def id_floor(now: datetime) -> int:
    return int(now.timestamp() * 1000) * PER_MILLISECOND


_PG_LAST = text(
    "SELECT greatest(coalesce(pg_sequence_last_value(pg_get_serial_sequence("
    "'outbox_events', 'id')::regclass), 0), (SELECT coalesce(max(id), 0) FROM outbox_events))")
_PG_SET = text("SELECT setval(pg_get_serial_sequence('outbox_events', 'id'), :to)")


async def rebase_event_ids(session: AsyncSession, *, now: datetime) -> Rebased:
    """Move the next event id to at least :func:`id_floor` of ``now`` (in the caller's
    transaction; a sequence's move is not undone by a rollback)."""
    floor = id_floor(now)
    if session.get_bind().dialect.name == "postgresql":
        before = int((await session.execute(_PG_LAST)).scalar_one())
        after = max(before, floor)
        if after > before:
            await session.execute(_PG_SET, {"to": after})
        return Rebased(before, after)
    ddl = (await session.execute(text(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox_events'"
    ))).scalar_one_or_none()
    if ddl is None or "AUTOINCREMENT" not in ddl.upper():
        raise IdsNotMovable("this database's outbox reuses ids (a schema from before "
                            "0066_outbox_ids_never_reused): run `satvault db upgrade`, "
                            "then `satvault events rebase-ids`")
    seq = (await session.execute(text(
        "SELECT seq FROM sqlite_sequence WHERE name = 'outbox_events'"))).scalar_one_or_none()
    largest = int((await session.execute(text(
        "SELECT coalesce(max(id), 0) FROM outbox_events"))).scalar_one())
    before = max(int(seq or 0), largest)
    after = max(before, floor)
    if after > before:
        if seq is None:
            await session.execute(text(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox_events', :to)"),
                {"to": after})
        else:
            await session.execute(text(
                "UPDATE sqlite_sequence SET seq = :to WHERE name = 'outbox_events'"),
                {"to": after})
    return Rebased(before, after)
