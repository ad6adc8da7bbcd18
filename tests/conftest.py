"""Fixtures: every database test runs on SQLite and, when ``SATVAULT_TEST_POSTGRES_URL`` is
set, on PostgreSQL too. Each backend is migrated once per session with the real Alembic
migrations; each test gets an empty database (a copy of the migrated SQLite file, or every
table emptied on PostgreSQL: ``_WIPE``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import fastapi.dependencies.models as fastapi_models
import fastapi.routing as fastapi_routing
import pytest
from argon2 import PasswordHasher, profiles
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from satvault.accounts import security
from satvault.composition import open_sessions
from satvault.db import create_engine
from satvault.kernel.clock import FakeClock, using
from satvault.migrate import upgrade

pytest_plugins = ["tests.chainenv", "tests.mailbox"]

# Passwords are hashed with argon2id at production's cost (``PasswordHasher()``: 64 MiB, three
# passes), ~0.25 s of CPU per hash or check on this machine: sign-in, sign-up and step-up
# tests pay it several times each (tests/auth and tests/web/pages: 1,090 of them, 192 s of
# their 524). The suite's own process hashes with argon2id's cheapest parameters instead: the
# same code and algorithm, and a hash carries its parameters, so checking follows them.
# Processes the tests start (``satvault serve``, the browser tests' server) keep production's,
# which tests/accounts/test_service.py asserts.
security._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)


def _per_worker(url: str) -> str:
    """Under pytest-xdist each worker has a database of its own, named after the given one
    (``<name>_gw0``, …): created on first use, dropped when the worker ends."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    u = make_url(url)
    return u.set(database=f"{u.database}_{worker}").render_as_string(hide_password=False)


PG_URL = _per_worker(os.environ.get("SATVAULT_TEST_POSTGRES_URL", ""))
if os.environ.get("SATVAULT_TEST_REQUIRE_POSTGRES") and not PG_URL:
    raise pytest.UsageError("SATVAULT_TEST_REQUIRE_POSTGRES is set but no PostgreSQL URL is")
BACKENDS = ["sqlite", *(["postgres"] if PG_URL else [])]


# An empty PostgreSQL database for the next test, in one round trip: every table of the
# schema emptied with triggers and foreign keys off (``session_replication_role``: the
# append-only tables' guards and the roll-ups' triggers do not fire, and no order is needed),
# then every sequence that was used back to its start (what RESTART IDENTITY did). The
# schema's tables, not a list: a table a migration adds is emptied without being named here
# (a hand-kept list lacked ``internal_refusals``). A table a test left a few rows in is
# DELETEd: microseconds, where a TRUNCATE makes the table's and each index's files anew (~0.5
# s per test of the invoices' tests, a fifth of their time). One left with more than 1,000 is
# TRUNCATEd: its dead rows would be read by the next tests until autovacuum came (33,000
# events left behind slowed the next stream test by a second per run, past its deadline).
_WIPE = """
DO $$
DECLARE t text; s record; n bigint; big text[] := '{}';
BEGIN
  SET LOCAL session_replication_role = replica;
  FOR t IN SELECT tablename FROM pg_tables
           WHERE schemaname = current_schema() AND tablename <> 'alembic_version' LOOP
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %I LIMIT 1001) AS x', t) INTO n;
    IF n > 1000 THEN
      big := big || format('%I', t);
    ELSIF n > 0 THEN
      EXECUTE format('DELETE FROM %I', t);
    END IF;
  END LOOP;
  IF cardinality(big) > 0 THEN
    EXECUTE 'TRUNCATE ' || array_to_string(big, ', ') || ' CASCADE';
  END IF;
  FOR s IN SELECT schemaname, sequencename FROM pg_sequences
           WHERE schemaname = current_schema() AND last_value IS NOT NULL LOOP
    EXECUTE format('ALTER SEQUENCE %I.%I RESTART', s.schemaname, s.sequencename);
  END LOOP;
END $$
"""


# Whatever is still connected to this worker's database when the next test starts is left
# over from an earlier one (a test that failed with a transaction open, a child process it
# did not stop): ended first, or the DELETE above would wait for its locks for ever and hang
# the run instead of letting the failure be reported.
_LEFTOVERS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
"""


# A test run with each database and each rate-limit storage (``storage``: in-process memory
# or Redis) needs a database only because the app does: the storage's behaviour does not
# depend on it. With PostgreSQL configured, such a test runs in two of the four pairs, each
# database and each storage once (SQLite with memory, PostgreSQL with Redis), not all four.
_PAIRS = {("sqlite", "memory"), ("postgres", "redis")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not PG_URL:
        _slow_files_first(items)
        return
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        pair = (params.get("db_url"), params.get("storage"))
        if None in pair or pair in _PAIRS:
            kept.append(item)
        else:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    _slow_files_first(items)


def _slow_files_first(items: list[pytest.Item]) -> None:
    """The files marked ``slow`` first, each kept whole and in order: pytest-xdist hands a
    worker one file at a time in this order, and a long file handed out last kept one worker
    busy while the other had nothing left (about a minute of CI's run)."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: files stay contiguous


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _WIPER.close()
    if PG_URL and os.environ.get("PYTEST_XDIST_WORKER"):
        asyncio.run(_on_pg_server(PG_URL, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _on_pg_server(url: str, statement: str, *, unless: str = "") -> None:
    """Run ``statement`` (``{name}``: the database of ``url``) on the server of ``url``,
    connected to its ``postgres`` database; not if the query ``unless`` finds a row."""
    import asyncpg

    u = make_url(url)
    admin = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                  password=u.password, database="postgres")
    try:
        if not (unless and await admin.fetchval(unless, u.database)):
            await admin.execute(statement.format(name=u.database))
    finally:
        await admin.close()


async def _ensure_pg_database(url: str) -> None:
    await _on_pg_server(url, 'CREATE DATABASE "{name}"',
                        unless="SELECT 1 FROM pg_database WHERE datname = $1")


def forget_endpoints() -> None:
    """FastAPI remembers how to call each endpoint and dependency in process-wide caches of
    4,096 entries (``fastapi.dependencies.models``), keyed by the function. A process serves
    one app, so that is bounded; the suite builds an app per test, and every closure the
    cache keeps (the docs pages close over their app) keeps that test's app, engine and
    connection pool alive: gigabytes by the end of the suite, and minutes of garbage
    collection at exit."""
    for cached in (fastapi_models._is_gen_callable_cached,
                   fastapi_models._is_async_gen_callable_cached,
                   fastapi_models._is_coroutine_callable_cached):
        cached.cache_clear()


# The suite builds an app per test, and FastAPI builds each route's dependency graph (the
# pydantic adapters of every parameter) per app, on the route's first request: 15 % of the
# CPU of a typical test file by profile, the same graphs again and again. What it builds is a
# function of the route's path, endpoint and dependencies alone, so for the routes declared
# at module level (every route of ``satvault.web``) it is built once per process. A
# production process builds its one app once, so this changes nothing it does. Measured side
# by side on six test files: 14 % less user CPU (medians of two runs each).
_build_dependant = fastapi_routing._build_dependant_with_parameterless_dependencies
_DEPENDANTS: dict[Any, Any] = {}


def _declared_at_module_level(fn: Any) -> bool:
    return "<locals>" not in getattr(fn, "__qualname__", "<locals>")


def _once(key: Any, build: Any) -> Any:
    """``build()``, remembered under ``key`` (at most 4,096 of them: a test's own routes are
    not kept for ever)."""
    built = _DEPENDANTS.get(key)
    if built is None:
        if len(_DEPENDANTS) >= 4096:
            _DEPENDANTS.clear()
        built = _DEPENDANTS[key] = build()
    return built


def _dependant_once(*, path: str, call: Any, dependencies: Any) -> Any:
    def build() -> Any:
        return _build_dependant(path=path, call=call, dependencies=dependencies)

    if not (_declared_at_module_level(call)
            and all(_declared_at_module_level(d.dependency) for d in dependencies)):
        return build()
    return _once(("dependant", path, call, tuple(dependencies)), build)


# The response models' fields likewise (a pydantic adapter each), when named by their type
# alone.
_create_model_field = fastapi_routing.create_model_field


def _model_field_once(name: str, type_: Any, *args: Any, **kwargs: Any) -> Any:
    def build() -> Any:
        return _create_model_field(name, type_, *args, **kwargs)

    if args or set(kwargs) - {"mode"}:
        return build()
    try:
        return _once(("field", name, type_, kwargs.get("mode")), build)
    except TypeError:  # a type that cannot be a key
        return build()


fastapi_routing._build_dependant_with_parameterless_dependencies = _dependant_once
fastapi_routing.create_model_field = _model_field_once


@pytest.fixture(autouse=True)
def _forget_endpoints() -> Iterator[None]:
    """:func:`forget_endpoints` after each test."""
    yield
    forget_endpoints()


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """The process clock, for this test a :class:`FakeClock` it moves forward (real time plus
    an offset): ``clock.advance(seconds=90)`` instead of sleeping until a deadline passes."""
    with using(FakeClock()) as fake:
        yield fake


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_migrated() -> str:
    asyncio.run(_ensure_pg_database(PG_URL))
    upgrade(PG_URL)
    return PG_URL


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database for this test: on SQLite a copy of the migrated template, always at
    the same path in this process (so the test's engine is this process's one engine for it:
    see ``engine``), on PostgreSQL the test database emptied."""
    if request.param == "sqlite":
        target = tmp_path_factory.getbasetemp() / "live" / "satvault.db"
        target.parent.mkdir(exist_ok=True)
        for left in (target, *(target.with_name(target.name + s)
                               for s in ("-wal", "-shm", "-journal"))):
            left.unlink(missing_ok=True)
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite+aiosqlite:///{target}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """The PostgreSQL test database, emptied: ``db_url``'s PostgreSQL half, and the database
    of a test that is PostgreSQL's alone (skipped only where no PostgreSQL is configured)."""
    if not PG_URL:
        pytest.skip("no PostgreSQL configured (SATVAULT_TEST_POSTGRES_URL)")
    url: str = request.getfixturevalue("pg_migrated")

    asyncio.run(wipe_pg(url))
    return url


class _Wiper:
    """The wipes' one connection per database, kept for the whole run on an event loop of its
    own (each test's loop ends with it): a new connection's backend loads the catalog of
    every table anew, ~33 of a wipe's ~40 ms on an empty database, before every PostgreSQL
    test. A connection lost (a test that ended every session, the server restarted) is
    opened again once."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: dict[str, Any] = {}

    def _running(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="pg-wipe", daemon=True).start()
        return self._loop

    async def wipe(self, url: str) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._wipe(url),
                                                                   self._running()))

    async def _wipe(self, url: str) -> None:
        import asyncpg

        for last in (False, True):
            conn = self._conns.get(url)
            try:
                if conn is None or conn.is_closed():
                    u = make_url(url)
                    conn = self._conns[url] = await asyncpg.connect(
                        host=u.host, port=u.port or 5432, user=u.username,
                        password=u.password, database=u.database)
                await conn.execute(_LEFTOVERS)
                await conn.execute(_WIPE)
                return
            except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                    asyncpg.AdminShutdownError):
                self._conns.pop(url, None)
                if last:
                    raise

    def close(self) -> None:
        if self._loop is None:
            return
        for conn in self._conns.values():
            asyncio.run_coroutine_threadsafe(conn.close(), self._loop).result(10)
        self._conns.clear()
        self._loop.call_soon_threadsafe(self._loop.stop)


_WIPER = _Wiper()


async def wipe_pg(url: str) -> None:
    """Empty the PostgreSQL test database of ``url`` (see ``_LEFTOVERS`` and ``_WIPE``)."""
    await _WIPER.wipe(url)


# One engine per database URL for the whole process (the URL of each backend is the same in
# every test: see ``db_url``), its connections closed after each test. A new engine per test
# compiled every SQL statement anew (SQLAlchemy caches compiled statements per engine): 15 %
# of the CPU of a typical test file by profile.
_ENGINES: dict[str, AsyncEngine] = {}
# What a test may not leave on the shared engine: listeners of these events (one left behind
# would run in every later test).
_WATCHED = (("engine", ("before_cursor_execute", "after_cursor_execute", "before_execute",
                        "after_execute", "begin", "commit", "rollback", "engine_connect")),
            ("pool", ("connect", "checkout", "checkin", "invalidate", "reset", "close")))


def _listeners(eng: AsyncEngine) -> dict[str, int]:
    targets = {"engine": eng.sync_engine.dispatch, "pool": eng.sync_engine.pool.dispatch}
    return {f"{where}.{name}": sum(1 for _ in getattr(targets[where], name))
            for where, names in _WATCHED for name in names}


def _forget_database(eng: AsyncEngine) -> None:
    """What the code remembers per engine of the database behind it (the platform's account
    ids, wallet identities): the next test's database is another one."""
    from satvault.events import outbox
    from satvault.ledger import platform

    platform._KNOWN.pop(eng.sync_engine, None)
    outbox._WALLETS.pop(eng.sync_engine, None)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    # 35 + the driver's 10 overflow = 45 connections at most per test: two xdist workers,
    # each in a 50-way race test, stay under PostgreSQL's 100 (the extra requests queue)
    eng = _ENGINES.get(db_url)
    if eng is None:
        eng = _ENGINES[db_url] = create_engine(db_url, pool_size=35)
    _forget_database(eng)
    before = _listeners(eng)
    yield eng
    await eng.dispose()
    _forget_database(eng)
    after = _listeners(eng)
    assert after == before, f"the test left listeners on the shared engine: {before} {after}"


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return open_sessions(engine)
