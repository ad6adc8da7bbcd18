"""Ledger throughput benchmark: transfers/s and p50/p99 commit latency on SQLite and PostgreSQL.

Cases (each time-boxed, after a short unmeasured warm-up):

* ``single_cN``   one transfer per commit, random pairs of customer accounts, N concurrent
                  clients (default N = 1, 16, 64);
* ``batch1000_cN``  batches of 1,000 random-pair transfers per commit, N clients (default 1);
* ``batch1000_cN_disjoint``  the same, but each of the N clients (default 8) pairs accounts
                  from its own share of them only, as different merchants' payout runs do:
                  the batches never wait for each other's row locks (random pairs over all
                  accounts make every two batches of 1,000 share accounts, so they take turns);
* ``hotfee_c16``  a linked pair per commit: the payment plus a fee credited to the platform's
                  fees, 16 clients: to the fees stripe the payment's id picks, as the app books
                  it (``PlatformAccounts.fee_account``), or with ``--one-fees-account`` to the
                  one account the fees were before they were striped (a hot row every commit
                  locks). ``transfers_per_s`` counts payments; ``rows_per_s`` both transfers.
* ``group_c16`` / ``grouphot_c16``  the same single transfer / payment + fee per call, but
                  the callers share commits through :class:`LedgerBatcher` (group commit): each
                  still waits for its own durable commit.

Paths (``--paths``), run side by side, interleaved run by run, for the ``single_*`` cases:
``plain`` is the store as it is (a lone plain transfer from these plain sessions is, on
PostgreSQL, the one statement of ``ledger/_plain.py`` sent on the driver connection in a
transaction of its own: one round trip); ``session`` sends that statement inside a session's
transaction instead (``BEGIN``, the statement, ``COMMIT``: what the application's sessions do,
whose commit also writes balance events); ``general`` switches the short path off, which is the
store of before (lock, read, plan, insert, update). The batch and group-commit cases run
``plain`` (a batch of plain transfers planned by PostgreSQL set-based, ``_plain.
create_plain_batch``) and ``general`` (planned in Python) when both are asked for. Keys in the
JSON are ``<case>/<path>``.

Every client is its own asyncio task calling :func:`satvault.ledger.store.submit` (its own
session and pooled connection per commit; the pool holds one connection per client).

SQLite always runs, on a temporary file. PostgreSQL runs when ``SATVAULT_TEST_POSTGRES_URL``
(or ``--postgres-url``) is set: only its host, port and credentials are used; the benchmark
creates a throwaway database ``satvault_bench_<random>`` and drops it at the end.

Progress goes to stderr; the last line of stdout is one JSON object with every figure.

    SATVAULT_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/x \\
        python benchmarks/ledger.py [--duration 10] [--accounts 10000] [--repeat 1]

This is a measurement, not a test: nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import io
import json
import math
import os
import platform
import pstats
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import satvault.ledger.store as ledger_store
from satvault.config import Settings
from satvault.db import create_engine, session_factory
from satvault.ledger.batcher import LedgerBatcher
from satvault.ledger.core import AccountKind, TransferSpec
from satvault.ledger.errors import LedgerError
from satvault.ledger.platform import PlatformAccounts, ensure_platform_accounts
from satvault.ledger.store import create_account, submit
from satvault.migrate import upgrade
from satvault.web.app import tune_gc

ASSET = "BTC"
FUNDING = 10**12  # msat per customer account: far more than any run can spend
TARGETS = {  # transfers/s on PostgreSQL, from the issue; reported, never asserted
    "single_c16": 3_000,
    "batch1000": 30_000,
    "hotfee_c16": "half of single_c16",
}

SpecMaker = Callable[[random.Random, str], list[TransferSpec]]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ machine info

def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs from /proc/stat, or zeros where unavailable."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _backend_jiffies(db_name: str | None) -> dict[int, tuple[float, float]]:
    """(utime, stime) of the local PostgreSQL backends serving ``db_name`` (their process
    title names the database), so a case can tell the database's CPU from everything else's."""
    out: dict[int, tuple[float, float]] = {}
    if not db_name:
        return out
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            if db_name not in (entry / "cmdline").read_bytes().decode(errors="replace"):
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (float(fields[11]), float(fields[12]))
    return out


@dataclass
class CpuSample:
    """CPU counters at one instant: the machine, this process, our database backends."""

    busy: float
    total: float
    proc: os.times_result
    backends: dict[int, tuple[float, float]]
    wall: float

    @classmethod
    def take(cls, db_name: str | None) -> CpuSample:
        busy, total = _cpu_busy()
        return cls(busy, total, os.times(), _backend_jiffies(db_name), time.perf_counter())

    def since(self, before: CpuSample) -> dict[str, float]:
        """Cores used in between: by us (client), our backends (db) and everything else, and
        the share of the client's and the backends' CPU spent in the kernel (sys)."""
        wall = self.wall - before.wall
        ncpu = os.cpu_count() or 1
        machine = ((self.busy - before.busy) / (self.total - before.total) * ncpu
                   if self.total > before.total else math.nan)
        c_user = self.proc.user - before.proc.user
        c_sys = self.proc.system - before.proc.system
        client = (c_user + c_sys) / wall
        d_user = d_sys = 0.0
        for pid, (user, system) in self.backends.items():
            u0, s0 = before.backends.get(pid, (0.0, 0.0))
            d_user, d_sys = d_user + user - u0, d_sys + system - s0
        db = (d_user + d_sys) / _TICK / wall
        return {"client_cpu": round(client, 2), "db_cpu": round(db, 2),
                "other_cpu": round(max(0.0, machine - client - db), 2),
                "machine_cpu": round(machine, 2),
                "client_sys_share": round(c_sys / (c_user + c_sys), 2) if c_user + c_sys else 0.0,
                "db_sys_share": round(d_sys / (d_user + d_sys), 2) if d_user + d_sys else 0.0}


async def wait_until_quiet(limit: float, threshold: float = 0.3) -> float:
    """Wait (up to ``limit`` s) until other processes use under ``threshold`` cores, so
    someone else's job does not skew a case. Returns the load last seen."""
    end = time.perf_counter() + limit
    waited = False
    while True:
        before = CpuSample.take(None)
        await asyncio.sleep(0.5)
        load = CpuSample.take(None).since(before)["machine_cpu"]
        if load < threshold:
            if waited:
                log(f"    machine quiet ({load:.2f} cores in use)")
            return load
        if time.perf_counter() >= end:
            log(f"    machine still busy ({load:.2f} cores in use by others): measuring anyway")
            return load
        if not waited:
            log(f"    machine busy ({load:.2f} cores in use by others): waiting up to {limit:.0f}s")
            waited = True
        await asyncio.sleep(1.5)


# ---------------------------------------------------------------------------------- results

@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    transfers: int = 0  # successful payments (the unit of transfers/s)
    rows: int = 0  # ledger transfers written
    failures: int = 0  # outcomes that were not ok
    errors: int = 0  # commits that raised (e.g. LedgerBusy after retries)


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(tallies: list[Tally], elapsed: float, cpu: dict[str, float]) -> dict[str, Any]:
    lat = sorted(x for t in tallies for x in t.latencies)
    transfers = sum(t.transfers for t in tallies)
    rows = sum(t.rows for t in tallies)
    return {
        "transfers_per_s": round(transfers / elapsed, 1),
        "rows_per_s": round(rows / elapsed, 1),
        "commits_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(percentile(lat, 50) * 1000, 2),
        "p99_ms": round(percentile(lat, 99) * 1000, 2),
        "transfers": transfers,
        "commits": len(lat),
        "failures": sum(t.failures for t in tallies),
        "errors": sum(t.errors for t in tallies),
        "seconds": round(elapsed, 2),
        # Cores in use: this process, our PostgreSQL backends, everything else, the machine;
        # and CPU spent per successful payment by this process and by our backends.
        **cpu,
        "client_us_per_transfer": round(cpu["client_cpu"] / transfers * elapsed * 1e6)
        if transfers else None,
        "db_us_per_transfer": round(cpu["db_cpu"] / transfers * elapsed * 1e6)
        if transfers else None,
    }


def median_of(runs: list[dict[str, Any]], noise: float) -> dict[str, Any]:
    """Medians over the runs that other processes left alone (``other_cpu`` < ``noise``
    cores), or over all runs when none was; ``clean_runs`` says how many counted."""
    clean = [r for r in runs if r["other_cpu"] < noise]
    use = clean or runs
    out: dict[str, Any] = {}
    for key, value in use[0].items():
        values = [r[key] for r in use if isinstance(r[key], int | float)]
        out[key] = round(statistics.median(values), 2) if values else value
    out["clean_runs"] = len(clean)
    out["runs_transfers_per_s"] = [r["transfers_per_s"] for r in runs]
    out["runs_other_cpu"] = [r["other_cpu"] for r in runs]
    return out


# ---------------------------------------------------------------------------- the workloads

def random_pairs(account_ids: list[int], size: int) -> SpecMaker:
    counter = [0]

    def make(rng: random.Random, tag: str) -> list[TransferSpec]:
        specs = []
        for _ in range(size):
            counter[0] += 1
            debit, credit = rng.sample(account_ids, 2)
            specs.append(TransferSpec(
                id=f"{tag}-{counter[0]}", debit_account_id=debit, credit_account_id=credit,
                amount=rng.randint(1, 1_000), asset=ASSET,
            ))
        return specs

    return make


def payment_with_fee(account_ids: list[int], fee_account: Callable[[str], int]) -> SpecMaker:
    counter = [0]

    def make(rng: random.Random, tag: str) -> list[TransferSpec]:
        counter[0] += 1
        payer, payee = rng.sample(account_ids, 2)
        n = counter[0]
        return [
            TransferSpec(id=f"{tag}-{n}", debit_account_id=payer, credit_account_id=payee,
                         amount=rng.randint(100, 1_000), asset=ASSET, linked=True),
            TransferSpec(id=f"{tag}-{n}f", debit_account_id=payer,
                         credit_account_id=fee_account(f"{tag}-{n}"),
                         amount=rng.randint(1, 10), asset=ASSET),
        ]

    return make


async def client(sessions: async_sessionmaker[AsyncSession], make: SpecMaker,
                 rng: random.Random, tag: str, deadline: float, payments_per_commit: int,
                 tally: Tally, batcher: LedgerBatcher | None = None) -> None:
    while time.perf_counter() < deadline:
        specs = make(rng, tag)
        start = time.perf_counter()
        try:
            outcomes = await (batcher.submit(specs) if batcher is not None
                              else submit(sessions, specs))
        except LedgerError as exc:
            tally.errors += 1
            log(f"    commit failed: {exc}")
            continue
        tally.latencies.append(time.perf_counter() - start)
        ok = sum(1 for o in outcomes if o.ok)
        tally.rows += ok
        tally.failures += len(outcomes) - ok
        if ok == len(outcomes):
            tally.transfers += payments_per_commit


async def run_phase(sessions: async_sessionmaker[AsyncSession], make: SpecMaker | list[SpecMaker],
                    clients: int,
                    seconds: float, payments_per_commit: int, tag: str, seed: int,
                    db_name: str | None, profiler: cProfile.Profile | None = None,
                    group: bool = False) -> dict[str, Any]:
    tallies = [Tally() for _ in range(clients)]
    rngs = [random.Random(seed * 1_000 + i) for i in range(clients)]
    cpu0 = CpuSample.take(db_name)
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    deadline = start + seconds
    batcher = LedgerBatcher(sessions) if group else None
    await asyncio.gather(*(
        client(sessions, make[i] if isinstance(make, list) else make, rngs[i], f"{tag}-{i}",
               deadline, payments_per_commit, tallies[i], batcher)
        for i in range(clients)
    ))
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    return summarise(tallies, elapsed, CpuSample.take(db_name).since(cpu0))


_IS_PLAIN = ledger_store.is_plain
_ALONE = ledger_store._alone_engine


@contextlib.contextmanager
def store_path(path: str) -> Any:
    """``plain``: the store as it is; ``session``: the one statement inside a session's
    transaction; ``general``: the short path switched off."""
    if path == "general":
        ledger_store.is_plain = lambda *_, **__: False  # type: ignore[assignment]
    if path in ("general", "session"):
        ledger_store._alone_engine = lambda *_: None  # type: ignore[assignment]
    try:
        yield
    finally:
        ledger_store.is_plain = _IS_PLAIN
        ledger_store._alone_engine = _ALONE


@dataclass(frozen=True)
class Case:
    name: str
    clients: int
    payments_per_commit: int
    maker: Callable[[list[int], Callable[[str], int]], SpecMaker]
    group: bool = False  # callers share commits through LedgerBatcher (group commit)
    shard: bool = False  # each client draws from its own share of the accounts


def cases(args: argparse.Namespace) -> list[Case]:
    out = [Case(f"single_c{n}", n, 1, lambda ids, _fees: random_pairs(ids, 1))
           for n in args.clients]
    size = args.batch_size
    out += [Case(f"batch{size}_c{n}", n, size, lambda ids, _fees: random_pairs(ids, size))
            for n in args.batch_clients]
    out += [Case(f"batch{size}_c{n}_disjoint", n, size,
                 lambda ids, _fees: random_pairs(ids, size), shard=True)
            for n in args.disjoint_batch_clients]
    out += [Case(f"hotfee_c{n}", n, 1, payment_with_fee) for n in args.hot_clients]
    out += [Case(f"group_c{n}", n, 1, lambda ids, _fees: random_pairs(ids, 1), group=True)
            for n in args.group_clients]
    out += [Case(f"grouphot_c{n}", n, 1, payment_with_fee, group=True)
            for n in args.group_clients]
    return out


def run_loop(coro: Any, loop: str) -> Any:
    """Run ``coro`` on uvloop (what ``satvault serve`` runs on, `server_loop = "auto"`) or on
    the standard library's loop."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


# ------------------------------------------------------------------------------------ setup

async def create_accounts(sessions: async_sessionmaker[AsyncSession], count: int,
                          workers: int) -> tuple[list[int], int, PlatformAccounts]:
    """Platform accounts (external, fees, ...) first, as at install, then the customers."""
    async with sessions() as s, s.begin():
        plat = await ensure_platform_accounts(s, ASSET)
    ids: list[int] = []
    chunk = 500

    async def make(lo: int, hi: int) -> None:
        async with sessions() as s, s.begin():
            for i in range(lo, hi):
                acc = await create_account(
                    s, name=f"bench:customer:{i}", asset=ASSET, kind=AccountKind.CUSTOMER_WALLET,
                    owner_type="user", owner_id=str(i), debits_must_not_exceed_credits=True,
                )
                ids.append(acc.id)

    starts = list(range(0, count, chunk))
    for k in range(0, len(starts), workers):
        await asyncio.gather(*(make(lo, min(lo + chunk, count)) for lo in starts[k:k + workers]))
    ids.sort()
    return ids, plat.external.id, plat


async def fund(sessions: async_sessionmaker[AsyncSession], ids: list[int], external: int) -> None:
    for k in range(0, len(ids), 1_000):
        specs = [TransferSpec(id=f"fund-{aid}", debit_account_id=external,
                              credit_account_id=aid, amount=FUNDING, asset=ASSET)
                 for aid in ids[k:k + 1_000]]
        outcomes = await submit(sessions, specs)
        bad = [o for o in outcomes if not o.ok]
        if bad:
            raise RuntimeError(f"funding failed: {bad[0]}")


async def server_version(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return str((await conn.execute(text("select sqlite_version()"))).scalar_one())
        return str((await conn.execute(text("show server_version"))).scalar_one())


class StatementCounter:
    """Counts statements the engine sends (by leading keyword), for --profile."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.counts: Counter[str] = Counter()
        self.hooks = [("before_cursor_execute", self._on_execute), ("commit", self._on_commit),
                      ("begin", self._on_begin)]
        self.target = engine.sync_engine
        for name, fn in self.hooks:
            event.listen(self.target, name, fn)

    def close(self) -> None:
        for name, fn in self.hooks:
            event.remove(self.target, name, fn)

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split(None, 2)
        key = " ".join(words[:2]) if words and words[0] in ("INSERT", "UPDATE") else words[0]
        self.counts[key.upper()] += 1

    def _on_begin(self, _conn: Any) -> None:
        self.counts["BEGIN"] += 1

    def _on_commit(self, _conn: Any) -> None:
        self.counts["COMMIT"] += 1


async def bench_database(label: str, url: str, args: argparse.Namespace,
                         only: str | None = None) -> dict[str, Any]:
    pool = max([*args.clients, *args.batch_clients, *args.disjoint_batch_clients,
                *args.hot_clients, *args.group_clients,
                16])
    if label == "postgresql" and args.pg_statement_cache is not None:
        # SQLAlchemy's asyncpg adapter prepares every statement and keeps the prepared ones per
        # connection (100 by default); 0 prepares afresh on every execution.
        url = make_url(url).update_query_dict(
            {"prepared_statement_cache_size": str(args.pg_statement_cache)}
        ).render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=pool)
    sessions = session_factory(engine)
    db_name = None if label == "sqlite" else make_url(url).database
    out: dict[str, Any] = {"version": await server_version(engine), "cases": {}}
    try:
        t0 = time.perf_counter()
        ids, external, plat = await create_accounts(
            sessions, args.accounts, workers=1 if label == "sqlite" else 8)
        await fund(sessions, ids, external)
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
        log(f"  [{label}] {len(ids)} accounts created and funded in "
            f"{time.perf_counter() - t0:.1f}s")
        if args.gc == "serve":
            tune_gc(Settings())
        todo = [c for c in cases(args) if only is None or c.name == only]
        if args.profile:
            todo = [c for c in todo if c.name == "single_c16"] or todo[:1]
        for case in todo:
            fees = ((lambda _key: plat.fees.id) if args.one_fees_account
                    else (lambda key: plat.fee_account(key).id))
            make: SpecMaker | list[SpecMaker] = (
                [case.maker(ids[i::case.clients], fees) for i in range(case.clients)]
                if case.shard else case.maker(ids, fees))
            # ``session`` is a single-transfer variant; batches and group commit compare the
            # set-based batch (``plain``) with the general path when both are asked for.
            paths = args.paths if case.name.startswith("single_") else (
                [p for p in args.paths if p != "session"] or ["plain"])
            runs: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
            for r, path in ((r, p) for r in range(args.repeat) for p in paths):
                tag = f"{case.name}-{path}-r{r}"
                if args.quiet_wait > 0:
                    await wait_until_quiet(args.quiet_wait)
                with store_path(path):
                    if args.warmup > 0:
                        await run_phase(sessions, make, case.clients, args.warmup,
                                        case.payments_per_commit, f"{tag}-w", args.seed + r,
                                        db_name, group=case.group)
                    profiler = cProfile.Profile() if args.profile else None
                    counter = StatementCounter(engine) if args.profile else None
                    res = await run_phase(sessions, make, case.clients, args.duration,
                                          case.payments_per_commit, tag, args.seed + r, db_name,
                                          profiler, group=case.group)
                runs[path].append(res)
                log(f"  [{label}] {case.name + '/' + path:<22} run {r + 1}/{args.repeat}: "
                    f"{res['transfers_per_s']:>9.1f} transfers/s  p50 {res['p50_ms']:.2f} ms  "
                    f"p99 {res['p99_ms']:.2f} ms  (cores: client {res['client_cpu']:.2f}, "
                    f"db {res['db_cpu']:.2f}, other {res['other_cpu']:.2f}; kernel share: "
                    f"client {res['client_sys_share']:.0%}, db {res['db_sys_share']:.0%}; "
                    f"failures {res['failures']}, errors {res['errors']})")
                if res["other_cpu"] >= args.noise:
                    log(f"    warning: {res['other_cpu']:.2f} cores went to other processes")
                if profiler is not None and counter is not None:
                    counter.close()
                    report_profile(profiler, counter, res, f"{args.profile}.{path}")
            for path in paths:
                out["cases"][f"{case.name}/{path}"] = median_of(runs[path], args.noise)
    finally:
        await engine.dispose()
    return out


def report_profile(profiler: cProfile.Profile, counter: StatementCounter,
                   res: dict[str, Any], path: str) -> None:
    profiler.dump_stats(path)
    commits = max(1, res["commits"])
    log("  statements per commit: " + ", ".join(
        f"{k} {v / commits:.2f}" for k, v in counter.counts.most_common()))
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(30)
    log(buf.getvalue())
    log(f"  cProfile stats written to {path}")


# ----------------------------------------------------------------------------- postgres db

def _admin_kwargs(url: str) -> dict[str, Any]:
    u = make_url(url)
    host = u.query.get("host") or u.host or "127.0.0.1"  # ?host=/run/postgresql: a socket
    return {"host": host, "port": u.port or 5432, "user": u.username,
            "password": u.password, "database": "postgres"}


async def _pg_admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(**_admin_kwargs(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def throwaway_postgres(url: str) -> Any:
    name = f"satvault_bench_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(url, f'CREATE DATABASE "{name}"'))
    log(f"[postgresql] created database {name}")
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            asyncio.run(_pg_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception:  # PostgreSQL < 13 has no WITH (FORCE)
            asyncio.run(_pg_admin(url, f'DROP DATABASE IF EXISTS "{name}"'))
        log(f"[postgresql] dropped database {name}")


@contextlib.contextmanager
def throwaway_sqlite() -> Any:
    with tempfile.TemporaryDirectory(prefix="satvault_bench_") as tmp:
        yield f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"


# ------------------------------------------------------------------------------------- main

def source_digest() -> str:
    """A short hash of the ledger's hot-path sources, to tell which code a result measured."""
    import satvault.db
    import satvault.ledger.core
    import satvault.ledger.store

    h = hashlib.sha256()
    import satvault.ledger._plain

    for mod in (satvault.ledger.store, satvault.ledger._plain, satvault.ledger.core, satvault.db):
        h.update(Path(str(mod.__file__)).read_bytes())
    return h.hexdigest()[:12]


def _ints(value: str) -> list[int]:
    return [int(x) for x in value.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per case")
    p.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each")
    p.add_argument("--accounts", type=int, default=10_000, help="customer accounts")
    p.add_argument("--clients", type=_ints, default=[1, 16, 64],
                   help="client counts for one transfer per commit (comma-separated)")
    p.add_argument("--batch-size", type=int, default=1_000, help="transfers per batch commit")
    p.add_argument("--batch-clients", type=_ints, default=[1], help="client counts for batches")
    p.add_argument("--disjoint-batch-clients", type=_ints, default=[8],
                   help="client counts for batches where each client's transfers stay within "
                        "its own share of the accounts (as different merchants' payout runs)")
    p.add_argument("--hot-clients", type=_ints, default=[16], help="client counts, fee mix")
    p.add_argument("--group-clients", type=_ints, default=[16],
                   help="client counts for group commit (LedgerBatcher), plain and fee mix")
    p.add_argument("--paths", type=lambda v: [x for x in v.split(",") if x],
                   default=["general", "session", "plain"],
                   help="store paths for the single_* cases: general (short path off: the "
                        "store of before), session (the one statement in a session's "
                        "transaction), plain (as it is: one round trip on PostgreSQL)")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                   help="the event loop: uvloop (as `satvault serve` runs) or asyncio's own")
    p.add_argument("--gc", choices=["serve", "default"], default="serve",
                   help="the client's garbage collector: tuned as `satvault serve` tunes its "
                        "own (gc.freeze, server_gc_gen0), or Python's defaults")
    p.add_argument("--pg-statement-cache", type=int, default=None,
                   help="prepared_statement_cache_size of the asyncpg adapter (default: its own)")
    p.add_argument("--repeat", type=int, default=1, help="runs per case; medians are reported")
    p.add_argument("--fresh-database", action="store_true",
                   help="each run of each case on a new database (not one grown by the cases "
                        "before it)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--one-fees-account", action="store_true",
                   help="fees to the one account of before the stripes (a hot row)")
    p.add_argument("--quiet-wait", type=float, default=10.0,
                   help="before each run wait up to this long for other load to settle")
    p.add_argument("--noise", type=float, default=0.3,
                   help="a run where other processes used this many cores or more is noisy: "
                        "medians use the other runs when there are any")
    p.add_argument("--postgres-url", default=os.environ.get("SATVAULT_TEST_POSTGRES_URL", ""),
                   help="default: $SATVAULT_TEST_POSTGRES_URL (host/user only are used)")
    p.add_argument("--skip-sqlite", action="store_true")
    p.add_argument("--skip-postgres", action="store_true")
    p.add_argument("--profile", metavar="PATH", default="",
                   help="run only single_c16 under cProfile, count statements, dump stats here")
    return p.parse_args(argv)


def check_targets(pg: dict[str, Any], batch_key: str) -> dict[str, Any]:
    cases_ = {k.removesuffix("/plain"): v for k, v in pg["cases"].items()}
    out: dict[str, Any] = {}
    single = cases_.get("single_c16", {}).get("transfers_per_s")
    if single is not None:
        out["single_c16"] = {"target": TARGETS["single_c16"], "got": single,
                             "met": single >= TARGETS["single_c16"]}
    for key in (batch_key, *(k for k in cases_ if k.startswith("batch")
                             and k.endswith("_disjoint"))):
        if key in cases_:
            got = cases_[key]["transfers_per_s"]
            out[key] = {"target": TARGETS["batch1000"], "got": got,
                        "met": got >= TARGETS["batch1000"]}
    hot = cases_.get("hotfee_c16", {}).get("transfers_per_s")
    if hot is not None and single is not None:
        out["hotfee_c16"] = {"target": round(single / 2, 1), "got": hot, "met": hot >= single / 2}
    return out


def fresh_rounds(label: str, make_db: Callable[[], Any], args: argparse.Namespace
                 ) -> dict[str, Any]:
    """``--fresh-database``: every run of every case on a database of its own, made and
    funded afresh, so no case measures a table the cases before it grew (the ledger's rate
    falls once its tables outgrow PostgreSQL's shared buffers); rounds alternate the cases'
    order. Medians over the rounds, as ``median_of`` takes them."""
    runs: dict[str, list[dict[str, Any]]] = {}
    version = ""
    names = [c.name for c in cases(args)]
    for r in range(args.repeat):
        one = argparse.Namespace(**{**vars(args), "repeat": 1, "seed": args.seed + r})
        for name in names if r % 2 == 0 else names[::-1]:
            with make_db() as url:
                log(f"[{label}] round {r + 1}/{args.repeat}, {name}: migrating")
                upgrade(url)
                res = run_loop(bench_database(label, url, one, only=name), args.loop)
            version = res["version"]
            for key, value in res["cases"].items():
                runs.setdefault(key, []).append(value)
    return {"version": version,
            "cases": {key: median_of(values, args.noise) for key, values in runs.items()}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "machine": {
            "nproc": os.cpu_count(), "mem_gib": _meminfo_gib(), "cpu": _cpu_model(),
            "python": platform.python_version(), "sqlite_lib": sqlite3.sqlite_version,
        },
        "source_digest": source_digest(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {k: getattr(args, k) for k in (
            "duration", "warmup", "accounts", "clients", "batch_size", "batch_clients",
            "one_fees_account",
            "hot_clients", "group_clients", "paths", "loop", "pg_statement_cache", "repeat", "seed",
            "quiet_wait", "noise")},
        "results": {},
    }
    backends: list[tuple[str, Callable[[], Any]]] = []
    if not args.skip_sqlite:
        backends.append(("sqlite", throwaway_sqlite))
    if args.postgres_url and not args.skip_postgres:
        backends.append(("postgresql", lambda: throwaway_postgres(args.postgres_url)))
    elif not args.skip_postgres:
        log("SATVAULT_TEST_POSTGRES_URL is not set: running SQLite alone")
    if args.profile and len(backends) > 1:
        backends = backends[-1:]  # profile PostgreSQL when there is one
    for label, make_db in backends:
        if args.fresh_database:
            report["results"][label] = fresh_rounds(label, make_db, args)
            continue
        with make_db() as url:
            log(f"[{label}] migrating")
            upgrade(url)
            report["results"][label] = run_loop(bench_database(label, url, args), args.loop)
    if "postgresql" in report["results"]:
        batch_key = f"batch{args.batch_size}_c{args.batch_clients[0]}" if args.batch_clients else ""
        report["targets_postgresql"] = check_targets(report["results"]["postgresql"], batch_key)
    print(json.dumps(report, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
