"""Counting the SQL statements an operation sends, so that a hot path cannot quietly grow
(issue 10). ``with count_statements(engine) as n: ...; assert n.total <= 6``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Statements", "count_statements"]


@dataclass
class Statements:
    sql: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.sql)

    def __str__(self) -> str:
        return "\n".join(f"{i + 1:3}. {s[:160]}" for i, s in enumerate(self.sql))


@contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[Statements]:
    seen = Statements()

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.sql.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)
