"""Row counts of every table: what a refused request must leave unchanged."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# Every table of the schema, read from the database (a table a migration adds is counted
# without being named anywhere): per database URL, the schema does not change in a test.
_LISTS = {
    "postgresql": ("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                   "AND tablename <> 'alembic_version' ORDER BY 1"),
    "sqlite": ("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
               "'sqlite_%' AND name <> 'alembic_version' ORDER BY 1"),
}
_tables: dict[str, list[str]] = {}


async def row_counts(sessions: async_sessionmaker[AsyncSession],
                     skip: tuple[str, ...] = ()) -> dict[str, int]:
    """One round trip: ``SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b), …``."""
    engine = sessions.kw["bind"]
    url = engine.url.render_as_string(hide_password=False)
    async with sessions() as s:
        if url not in _tables:
            _tables[url] = list((await s.execute(text(_LISTS[engine.dialect.name]))).scalars())
        tables = [t for t in _tables[url] if t not in skip]
        sql = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{t}")' for t in tables)
        values = (await s.execute(text(sql))).one()
    return dict(zip(tables, (int(v) for v in values), strict=True))
