"""Row counts of every table: what a refused request must leave unchanged."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import PG_ONLY_TABLES, TABLES


async def row_counts(sessions: async_sessionmaker[AsyncSession],
                     skip: tuple[str, ...] = ()) -> dict[str, int]:
    """One round trip: ``SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b), …``."""
    pg = sessions.kw["bind"].dialect.name == "postgresql"
    tables = [t for t in TABLES + (PG_ONLY_TABLES if pg else []) if t not in skip]
    sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)
    async with sessions() as s:
        values = (await s.execute(text(sql))).one()
    return dict(zip(tables, (int(v) for v in values), strict=True))
