"""Counting the SQL statements an operation sends, so that a hot path cannot quietly grow
(issue 10). ``with count_statements(engine) as n: ...; assert n.total <= 6``.

Transaction control (``BEGIN``, ``BEGIN IMMEDIATE``, ``COMMIT``, ``ROLLBACK``, savepoints) is
not a statement here: SQLite sends its ``BEGIN IMMEDIATE`` through the cursor and asyncpg
does not, so counting it would make the two databases disagree. Transactions are counted
apart, in ``transactions`` (the engine's ``begin`` event, the same on both)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Statements", "count_statements"]

_CONTROL = re.compile(r"^(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|END)\b", re.IGNORECASE)


@dataclass
class Statements:
    sql: list[str] = field(default_factory=list)
    transactions: int = 0
    units: list[list[str]] = field(default_factory=list)  # the statements of each transaction

    @property
    def total(self) -> int:
        return len(self.sql)

    def __str__(self) -> str:
        return "\n".join(f"{i + 1:3}. {s[:160]}" for i, s in enumerate(self.sql)) \
            + f"\n     in {self.transactions} transaction(s)"


@contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[Statements]:
    seen = Statements()

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split())
        if not _CONTROL.match(text):
            seen.sql.append(text)
            if not seen.units:
                seen.units.append([])
            seen.units[-1].append(text)

    def begin(_conn: Any) -> None:
        seen.transactions += 1
        seen.units.append([])

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "begin", begin)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)
        event.remove(engine.sync_engine, "begin", begin)
