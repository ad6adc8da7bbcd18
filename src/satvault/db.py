"""Database plumbing shared by every domain: metadata, the engine, sessions, migrations.

Two databases are supported. PostgreSQL (asyncpg) is the production store; SQLite (aiosqlite)
is the embedded default so ``make run`` needs nothing installed. Where they differ the code
says so:

* SQLite has one writer at a time. Every transaction starts with ``BEGIN IMMEDIATE`` so the
  write lock is taken up front (no deadlock-prone SHARED→RESERVED upgrade), and a busy timeout
  makes waiting writers queue instead of failing; but :func:`one_read`'s, which never writes,
  starts deferred and takes no write lock.
* Amount columns are ``NUMERIC(39,0)`` on PostgreSQL (room for u128 values such as wei) and
  ``INTEGER`` (i64) on SQLite; :func:`max_amount` tells the ledger which range applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from satvault.kernel.clock import utcnow  # the process clock; re-exported for the domains
from satvault.kernel.files import create_private, flock_or_none

__all__ = [
    "Amount",
    "Base",
    "DatabaseInUse",
    "IdInt",
    "StrEnumType",
    "UtcDateTime",
    "async_database_url",
    "create_engine",
    "hold_sqlite_in_use",
    "insert_ignoring",
    "max_amount",
    "one_at_a_time",
    "one_read",
    "prepare_sqlite_file",
    "sequence_fence",
    "sequence_snapshot",
    "session_factory",
    "sqlite_in_use",
    "still_open",
    "unit_of_work",
    "utcnow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

U128_MAX = 2**128 - 1
I64_MAX = 2**63 - 1


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# An autoincrementing integer key: BIGINT on PostgreSQL, the rowid alias INTEGER on SQLite.
IdInt = BigInteger().with_variant(Integer(), "sqlite")


class Amount(TypeDecorator[int]):
    """An integer amount in an asset's smallest unit; never a float, never a Decimal outside."""

    impl = Numeric(39, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(39, 0, asdecimal=True))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return int(value)
        return Decimal(int(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both databases (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


E = TypeVar("E", bound=StrEnum)


class StrEnumType(TypeDecorator[E]):
    """A status-like column holding one member of ``enum_cls``, stored as its string value.

    Binding goes through ``enum_cls(value)``, so a string outside the set fails here, in Python,
    before any statement reaches the database (whose CHECK constraint is the last word); rows
    load as enum members. A plain string of the right value binds as well, so the column can be
    compared with either."""

    impl = String
    cache_ok = True

    def __init__(self, enum_cls: type[E], length: int) -> None:
        super().__init__(length)
        self.enum_cls = enum_cls
        self.length = length

    @property
    def python_type(self) -> type[E]:
        return self.enum_cls

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_cls(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_cls(value)


def max_amount(dialect_name: str) -> int:
    return I64_MAX if dialect_name == "sqlite" else U128_MAX


# The URL schemes people write (PostgreSQL's own tools print postgresql://…; Heroku-style
# services hand out postgres://…) and the asyncio driver each one means here.
_ASYNC_SCHEMES = {
    "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg", "postgres+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite",
}


async def one_at_a_time(session: AsyncSession, key: int) -> None:
    """Hold ``key`` until this transaction ends, so transactions taking the same key run one
    after another (PostgreSQL: a transaction-level advisory lock; SQLite has one writer).
    For a change that replaces the one row in a given state (the live rule set or policy):
    under READ COMMITTED, a second one waiting on that row's lock finds it changed and no
    row in its place, and then broke the unique index with a 500 (found from outside)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(key)))


def insert_ignoring(dialect_name: str, table: Any, *index_elements: str,
                    where: Any = None) -> Any:
    """``INSERT … ON CONFLICT [(index_elements) [WHERE where]] DO NOTHING`` on either
    database: a row a concurrent writer made first is left as it is, and nobody fails."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(
        index_elements=list(index_elements) or None, index_where=where)


def async_database_url(url: str) -> str:
    """``url`` with the driver satvault speaks: ``postgresql://`` and ``postgres://`` become
    ``postgresql+asyncpg://`` (libpq's ``sslmode=`` becomes asyncpg's ``ssl=``),
    ``sqlite://`` becomes ``sqlite+aiosqlite://``. Any other
    database or driver (``postgresql+psycopg2://``, ``mysql://``) is a ValueError that says
    what to write instead (and never repeats the URL, which may hold a password)."""
    scheme, sep, rest = url.partition("://")
    target = _ASYNC_SCHEMES.get(scheme.lower()) if sep else None
    if target is None:
        shown = f"scheme {scheme!r}" if sep else "a value without a scheme"
        raise ValueError(f"unsupported database URL ({shown}): use postgresql://user@host/db "
                         "(driven by asyncpg) or sqlite:///path/to/file.db (aiosqlite)")
    if target.startswith("postgresql") and "sslmode=" in rest:
        # libpq's ?sslmode=require is asyncpg's ?ssl=require (same mode names).
        base, _, query = rest.partition("?")
        rest = base + "?" + "&".join(
            "ssl=" + p.split("=", 1)[1] if p.startswith("sslmode=") else p
            for p in query.split("&"))
    return f"{target}://{rest}"


class DatabaseInUse(Exception):
    """The SQLite file is held by another satvault process (a serve, or a restore)."""


class SchemaNotCurrent(RuntimeError):
    """The database is not at the schema this satvault needs (``satvault db upgrade``)."""


class DatabaseMissing(SchemaNotCurrent):
    """A SQLite database file that is not there, opened by a command that only works on one
    that is (found from outside: ``db status`` under a mistyped ``SATVAULT_HOME`` made the
    folder and an empty database in it, which the next command then found "without
    schema")."""


def _sqlite_file(url: str) -> Path | None:
    path = url.split("///", 1)[-1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" and not path.startswith("file:") else None


def hold_sqlite_in_use(url: str) -> int | None:
    """For ``satvault serve`` on SQLite: an exclusive ``flock`` on the database file itself
    (one process serves a SQLite file), kept by the returned descriptor until it is closed,
    so a restore over that file, by whatever name (a symlink, a hard link: found from
    outside, a lock beside the file's name was missed under another name), can tell it is
    served (:func:`sqlite_in_use`). None for anything but an existing SQLite file. SQLite's
    own locks are ``fcntl`` locks, which a ``flock`` neither takes nor waits for."""
    path = _sqlite_file(url)
    if path is None or not path.exists():
        return None
    fd = flock_or_none(path, exclusive=True)
    if fd is None:
        raise DatabaseInUse(f"{path} is in use by another satvault serve, or being restored: "
                            "one process serves a SQLite file")
    return fd


def sqlite_in_use(url: str) -> bool:
    """Whether a process holds :func:`hold_sqlite_in_use`'s lock (or a restore's) on the
    SQLite file of ``url``."""
    path = _sqlite_file(url)
    if path is None or not path.exists():
        return False
    fd = flock_or_none(path, exclusive=True)
    if fd is None:
        return True
    os.close(fd)  # closing gives back the lock taken just now
    return False


def prepare_sqlite_file(url: str) -> None:
    """For a SQLite URL naming a file: its folder made, and the file created private (its
    secrets are for satvault's user only) before anything opens it."""
    if not url.startswith("sqlite"):
        return
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(path)


def create_engine(url: str, *, pool_size: int = 20, echo: bool = False,
                  create: bool = True) -> AsyncEngine:
    """``create``: a SQLite file that is not there is made (and its folder); otherwise
    :class:`DatabaseMissing`, before anything is made."""
    url = async_database_url(url)
    if url.startswith("sqlite"):
        path = _sqlite_file(url)
        if not create and path is not None and not path.exists():
            raise DatabaseMissing(
                f"the database {path} does not exist: run `satvault init` to make it, or "
                "point SATVAULT_HOME or SATVAULT_DATABASE_URL at the one you meant")
        prepare_sqlite_file(url)
        # One connection. Every SQLite transaction here is BEGIN IMMEDIATE (below), so only
        # one can run at a time anyway; with more connections the others wait in SQLite's busy
        # handler, which sleeps in steps of up to 100 ms however soon the lock is free (that
        # measured as tens of ms lost per request under load, and seconds at p99). With one
        # connection they queue on the pool instead, first come first served, and start the
        # moment it is free. Other processes (the CLI) still meet the busy timeout.
        del pool_size
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": 60, "factory": _SqliteConnection},
            pool_size=1, max_overflow=0, pool_timeout=120,
        )
        _sqlite_serialised_writes(engine)
        return engine
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=10, pool_pre_ping=False
    )


class _SqliteConnection(sqlite3.Connection):
    """A connection whose ``close()`` ends its transaction first.

    ``sqlite3.Connection.close()`` uses ``sqlite3_close_v2``: while any cursor still holds a
    statement that has rows left, the connection only becomes a "zombie" that keeps its open
    transaction, and so the write lock every transaction here takes (``BEGIN IMMEDIATE``), until
    that cursor is garbage collected. That is what a cancelled query leaves: a task cancelled
    while a SELECT runs (a client leaving an event stream, a worker stopped, a timeout) makes
    SQLAlchemy throw the connection away, the cursor lives on in the exception's traceback
    (a reference cycle, freed whenever the cyclic collector gets to it), and the pool's new
    connection then waits for the lock until the busy timeout says "database is locked".
    Rolling back before closing frees the lock at once, whoever still holds a cursor."""

    def close(self) -> None:
        # Closed already (a stream's client left while its connection was being thrown
        # away, and aiosqlite closes it again): reading ``in_transaction`` raises then, which
        # surfaced as an error-level "Future exception was never retrieved" each time (found
        # from outside). A closed connection holds no transaction to end.
        with contextlib.suppress(sqlite3.Error):
            if self.in_transaction:
                self.execute("ROLLBACK")
        super().close()


_READ_ONLY = "satvault_read_only"


def _sqlite_serialised_writes(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to us: pysqlite's implicit BEGIN is deferred and would
        # upgrade its lock mid-transaction, which is where SQLite writers deadlock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A read (:func:`one_read`) begins deferred: in WAL mode it takes no lock that a
        # writer waits for, in this process or in another (found from outside: every event
        # stream's poll of the outbox took the write lock, and a CLI or worker process
        # writing meanwhile waited for it).
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine, *, public_url: str = ""
                    ) -> async_sessionmaker[AsyncSession]:
    """Sessions for ``engine``. ``public_url`` (where customers reach this platform) rides in
    each session's ``info`` so events written deep in a money path carry absolute links.
    The application's factories come from :func:`satvault.composition.open_sessions`, which
    also wires the outbox's commit hooks into them."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False,
                              info={"public_url": public_url.rstrip("/")})


@asynccontextmanager
async def unit_of_work(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: commits when the block ends normally, rolls back on any exception."""
    async with sessions() as session, session.begin():
        yield session


@asynccontextmanager
async def one_read(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session for reads only: one statement, or several that need not agree with each
    other. On PostgreSQL they run outside any transaction (autocommit: no BEGIN and no
    ROLLBACK round trip around them; each statement sees its own snapshot), on SQLite in a
    deferred transaction (``BEGIN``, not the ``BEGIN IMMEDIATE`` of every other one: a read
    holds no write lock, and in WAL mode no writer waits for it). Never for a write."""
    async with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        else:
            await session.connection(execution_options={_READ_ONLY: True})
        yield session


# --- reading numbered rows in commit order (PostgreSQL) --------------------------------------
# A serial id is handed out when a row is inserted, not when it commits: id 7 can commit after
# id 8 is visible. A reader that must never skip a row (the audit sealer, the event relay, the
# live streams) reads up to a *fence*: the sequences' last values, once every transaction that
# may hold a row numbered up to them has ended.
#
# Which may: one that has written (it has a transaction id), and one running a statement, which
# may be the INSERT that took an id a moment ago (the default's nextval() comes before the row
# is written and the transaction id assigned, in the same statement: every serial column here
# takes its value so). A transaction that has written nothing and runs no statement holds no
# id: a backup's (pg_dump reads in one transaction for as long as it runs), a report's, a
# client's left idle. Found checking the live streams' fix: counting those too, a backup
# stalled the relay to NATS, the audit sealer and the streams' floor for as long as it ran.
# One whose session this role may not see into (another role's, without pg_read_all_stats)
# counts for as long as it is open; before, such sessions were not counted at all.
# Each open transaction that may is named by ``<virtualxid>@<its statement's start>``, and by
# ``<virtualxid>@*`` too once it has written (:func:`still_open`): one named at the fence's
# start still may while a later look names it the same, or has it written; one that has since
# moved on to another statement without writing may not (the ids it takes now are above the
# fence).
_OPEN_TRANSACTIONS = text(  # the client transactions of this database that may, but ours
    "SELECT l.virtualxid || '@' || coalesce(a.query_start::text, ''), "
    "a.backend_xid IS NOT NULL FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'virtualxid' AND l.granted AND l.mode = 'ExclusiveLock' "
    "AND a.datname = current_database() AND l.pid <> pg_backend_pid() "
    # backend_type and state are NULL where this role may not see into another role's
    # session (without pg_read_all_stats): a client's (it has a user) may hold an id, so it
    # counts (found reviewing the change: such sessions were not counted at all)
    "AND (a.backend_type = 'client backend' OR a.backend_type IS NULL AND a.usename IS NOT NULL) "
    "AND (a.backend_xid IS NOT NULL OR a.state = 'active' OR a.state IS NULL)")


async def open_transactions(session: AsyncSession) -> frozenset[str]:
    """The names of the transactions that may hold a numbered row now (see above)."""
    names: set[str] = set()
    for name, wrote in (await session.execute(_OPEN_TRANSACTIONS)).all():
        names.add(name)
        if wrote:
            names.add(name.partition("@")[0] + "@*")
    return frozenset(names)


def still_open(named: frozenset[str], now: frozenset[str]) -> frozenset[str]:
    """Those of ``named`` (an earlier :func:`open_transactions`) that may still hold a row
    numbered before it, by the names ``now`` (a later one): the same statement still running,
    or the transaction written since (when it wrote cannot be told: it may)."""
    return frozenset(n for n in named if n in now or n.partition("@")[0] + "@*" in now)


async def sequence_snapshot(session: AsyncSession, table: str, column: str
                            ) -> tuple[int, frozenset[str]]:
    """The fence without the wait (PostgreSQL only): the serial sequence's last value and the
    transactions that may hold a row numbered up to it, named just after it was read (see
    :func:`open_transactions`). Once no later look names any of those,
    every row numbered up to that value is committed or gone for good; a reader that must not
    wait for them (a live stream) keeps reading above its last such value meanwhile."""
    last = int((await session.execute(text(
        f"SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('{table}', "
        f"'{column}')::regclass), 0)"))).scalar_one())
    return last, await open_transactions(session)


async def sequence_fence(sessions: async_sessionmaker[AsyncSession],
                         columns: tuple[tuple[str, str], ...], *, timeout: float,
                         poll: float = 0.02) -> tuple[int, ...] | None:
    """For each (table, serial column), its sequence's last value, such that every row
    numbered up to it is committed or rolled back for good; None if a transaction open at
    the start outlived ``timeout``. PostgreSQL only."""
    last_values = text("SELECT " + ", ".join(
        f"coalesce(pg_sequence_last_value(pg_get_serial_sequence('{table}', '{column}')"
        f"::regclass), 0)" for table, column in columns))
    async with sessions() as s, s.begin():
        last = tuple(int(v) for v in (await s.execute(last_values)).one())
        open_now = await open_transactions(s)
    deadline = time.monotonic() + timeout
    while open_now:
        async with sessions() as s, s.begin():
            open_now = still_open(open_now, await open_transactions(s))
        if not open_now:
            break
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(poll)
    return last
