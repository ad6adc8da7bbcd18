"""The PostgreSQL function every limit check reads, ``risk_spent_since``, before and after
migration 0050 (which adds the withdrawals released inside the window but asked for before
it): server time per call, side by side in one database.

    SATVAULT_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/spent_function.py

It creates a throwaway database (``spent_bench``), migrates it to the head, adds migration
0039's body of the function as ``risk_spent_since_0039``, and gives ``--wallets`` wallets
``--withdrawals`` live withdrawals each in the last hours, a tenth of them released after
being held (written with triggers and foreign keys off: no wallet rows, empty roll-ups, so
the figures are the function's fixed cost, which is what 0050 adds to). Then, over
``--repeat`` rounds with the order alternating, it times one statement that calls each
version ``--calls`` times (one per wallet in turn, a 24-hour window, every rail, as the
limits ask), and reports the median microseconds per call. Not a timed test: a measurement.

``--migration-ab REV`` measures instead the whole check a withdrawal runs, ``withdrawal_usage``
(the wallet's lock, since 0061 the person's, and the sums), with the database at revision REV
and at head, alternating per round (downgrading and upgrading back: one seeded database). The
seed is real rows this time: ``--persons`` users, every other one with ``--merchants``
merchants of their own, each wallet with ``--withdrawals`` live withdrawals over the last 30
days (the roll-ups rebuilt from them). Each check is its own transaction (BEGIN, the check,
COMMIT, as on the hot path) on a prepared statement, ``--calls`` per round and kind of payer
(a user with one wallet; a merchant's wallet of a user with merchants); reported per version
and kind: the median latency of the check's statement in microseconds, and the database
backend's CPU per check transaction (``/proc/<backend pid>/stat``: the server must run on
this machine). ``--generic-before`` adds REV's function on generic plans (as 0061 runs its
own) as a third version.

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from satvault.db import create_engine
from satvault.migrate import upgrade

_VERSIONS = Path(__file__).resolve().parents[1] / "src/satvault/migrations/versions"
_NAME = "spent_bench"


def _old_body() -> str:
    """Migration 0039's function, renamed."""
    src = (_VERSIONS / "2026_12_05_0039_risk_rollups.py").read_text()
    start = src.index("CREATE FUNCTION risk_spent_since")
    end = src.index("$fn$;", start) + len("$fn$;")
    return (src[start:end].replace("{_DEAD}", "('failed', 'cancelled')")
            .replace("CREATE FUNCTION risk_spent_since", "CREATE FUNCTION risk_spent_since_0039"))


async def _fresh(base: str, name: str = _NAME) -> str:
    import asyncpg

    u = make_url(base)
    admin = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                  password=u.password, database="postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return u.set(database=name).render_as_string(hide_password=False)


async def _seed(url: str, args: argparse.Namespace) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(_old_body()))
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for w in range(args.wallets):
            await conn.execute(text(
                "INSERT INTO withdrawals (id, wallet_id, method, destination, amount_msat, "
                "fee_reserve_msat, status, hold_id, created_at, updated_at, released_at) "
                "SELECT 'wd_' || :w || '_' || g, 'wal_' || :w, 'onchain', 'bcrt1q', "
                "1000000, 0, 'pending', 'h_' || :w || '_' || g, "
                "now() - (g * interval '1 minute'), now(), "
                "CASE WHEN g % 10 = 0 THEN now() - interval '1 minute' END "
                "FROM generate_series(1, :n) g"), {"w": str(w), "n": args.withdrawals})
    async with engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("ANALYZE withdrawals"))
    await engine.dispose()


async def _time(url: str, fn: str, calls: int, wallets: int) -> float:
    engine = create_engine(url)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        start = time.perf_counter()
        await conn.execute(text(
            f"SELECT sum(t.total) FROM generate_series(1, :calls) g, "
            f"LATERAL {fn}('wal_' || (g % :wallets)::text, NULL, now() - interval '24 hours') t"),
            {"calls": calls, "wallets": wallets})
        seconds = time.perf_counter() - start
    await engine.dispose()
    return seconds / calls * 1e6


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = args.database_url or os.environ.get("SATVAULT_TEST_POSTGRES_URL")
    if not base:
        sys.exit("set SATVAULT_TEST_POSTGRES_URL or --database-url")
    url = await _fresh(base)
    await asyncio.to_thread(upgrade, url)
    await _seed(url, args)
    runs: dict[str, list[float]] = {"0039": [], "0050": []}
    names = {"0039": "risk_spent_since_0039", "0050": "risk_spent_since"}
    for r in range(args.repeat):
        order = ["0039", "0050"] if r % 2 == 0 else ["0050", "0039"]
        for version in order:
            us = await _time(url, names[version], args.calls, args.wallets)
            runs[version].append(round(us, 2))
            print(f"round {r} {version}: {us:.2f} us/call", file=sys.stderr)
    medians = {v: statistics.median(xs) for v, xs in runs.items()}
    return {"args": vars(args), "machine": {"cpus": os.cpu_count(),
                                            "python": platform.python_version()},
            "us_per_call_median": medians,
            "added_us_per_call": round(medians["0050"] - medians["0039"], 2),
            "ratio": round(medians["0050"] / medians["0039"], 3), "runs": runs}


# --- --migration-ab: the whole check at two revisions -----------------------------------------

_SEED_PEOPLE = """
INSERT INTO users (id, email, display_name, is_admin, kyc_tier, status, created_at)
SELECT 'usr_' || p, 'p' || p || '@bench.example', '', false, 0, 'active', now()
  FROM generate_series(1, :persons) p;
INSERT INTO merchants (id, name, owner_user_id, created_at)
SELECT 'mer_' || p || '_' || k, 'shop', 'usr_' || p, now()
  FROM generate_series(2, :persons, 2) p, generate_series(1, :merchants) k;
INSERT INTO wallets (id, owner_type, owner_id, asset, ledger_account_id, created_at)
SELECT 'wal_' || o.id, o.kind, o.id, 'BTC', row_number() OVER (ORDER BY o.id), now()
  FROM (SELECT id, 'user' AS kind FROM users UNION ALL
        SELECT id, 'merchant' FROM merchants) AS o;
INSERT INTO withdrawals (id, wallet_id, method, destination, amount_msat, fee_reserve_msat,
                         status, hold_id, created_at, updated_at)
SELECT w.id || '_' || g, w.id, (ARRAY['onchain', 'lightning', 'internal'])[1 + g % 3],
       'dest' || g, 1000000 + g, 0, 'pending', 'h_' || w.id || '_' || g,
       now() - (g * interval '30 days' / :n), now()
  FROM wallets w, generate_series(1, :n) g;
SELECT risk_rollups_rebuild(NULL)
"""

# The payers: a user with one wallet (odd ones), a merchant's wallet of a user with merchants.
_KINDS = {"single": lambda p: f"wal_usr_{2 * p + 1}",
          "group": lambda p: f"wal_mer_{2 * p + 2}_1"}


async def _seed_people(url: str, args: argparse.Namespace) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in _SEED_PEOPLE.strip().split(";\n"):
            await conn.execute(text(statement), {"persons": args.persons,
                                                 "merchants": args.merchants,
                                                 "n": args.withdrawals})
    async with engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        for table in ("users", "merchants", "wallets", "withdrawals", "risk_rollups"):
            await conn.execute(text(f"ANALYZE {table}"))
    await engine.dispose()


def _migrate_to(url: str, revision: str) -> None:
    from alembic import command

    from satvault.migrate import alembic_config

    if revision == "head":
        upgrade(url)
    else:
        command.downgrade(alembic_config(url), revision)


async def _generic(url: str, on: bool) -> None:
    """``--generic-before``: the earlier function on generic plans (``on``), as 0061 runs its
    own, to tell what counting the group costs from what the plans save; or as it was."""
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(
            "ALTER FUNCTION withdrawal_usage(varchar, varchar, timestamptz, timestamptz) "
            + ("SET plan_cache_mode = force_generic_plan" if on else
               "RESET plan_cache_mode")))
    await engine.dispose()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _checks(url: str, kind: str, args: argparse.Namespace) -> tuple[float, float]:
    """(median µs of the check's statement, backend CPU µs per check transaction)."""
    import asyncpg

    u = make_url(url)
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                 password=u.password, database=u.database)
    try:
        check = await conn.prepare(
            "SELECT * FROM withdrawal_usage($1, 'internal', now() - interval '24 hours', "
            "now() - interval '30 days')")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        people = args.persons // 2
        for p in range(min(people, 50)):  # warm the plans and the caches
            async with conn.transaction():
                await check.fetchrow(_KINDS[kind](p))
        times = []
        cpu = _cpu_seconds(pid)
        for n in range(args.calls):
            async with conn.transaction():
                start = time.perf_counter()
                await check.fetchrow(_KINDS[kind](n % people))
                times.append(time.perf_counter() - start)
        cpu = _cpu_seconds(pid) - cpu
    finally:
        await conn.close()
    return statistics.median(times) * 1e6, cpu / args.calls * 1e6


async def run_ab(args: argparse.Namespace) -> dict[str, Any]:
    base = args.database_url or os.environ.get("SATVAULT_TEST_POSTGRES_URL")
    if not base:
        sys.exit("set SATVAULT_TEST_POSTGRES_URL or --database-url")
    url = await _fresh(base, args.database)
    await asyncio.to_thread(upgrade, url)
    await _seed_people(url, args)
    versions = [(args.migration_ab, args.migration_ab), ("head", "head")]
    if args.generic_before:
        versions.insert(1, (f"{args.migration_ab}+generic", args.migration_ab))
    runs: dict[str, dict[str, dict[str, list[float]]]] = {
        v: {k: {"us": [], "cpu_us": []} for k in _KINDS} for v, _ in versions}
    for r in range(args.repeat):
        for version, revision in (versions if r % 2 == 0 else versions[::-1]):
            await asyncio.to_thread(_migrate_to, url, revision)
            if revision != "head":
                await _generic(url, version.endswith("+generic"))
            for kind in _KINDS:
                us, cpu = await _checks(url, kind, args)
                runs[version][kind]["us"].append(round(us, 1))
                runs[version][kind]["cpu_us"].append(round(cpu, 1))
                print(f"round {r} {version} {kind}: {us:.1f} us, {cpu:.1f} us CPU",
                      file=sys.stderr)
    medians = {v: {k: {m: statistics.median(xs) for m, xs in ms.items()}
                   for k, ms in ks.items()} for v, ks in runs.items()}
    return {"args": vars(args), "machine": {"cpus": os.cpu_count(),
                                            "python": platform.python_version(),
                                            "load": os.getloadavg()},
            "median": medians, "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url")
    p.add_argument("--wallets", type=int, default=50)
    p.add_argument("--withdrawals", type=int, default=200)
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--migration-ab", metavar="REVISION", default="",
                   help="time withdrawal_usage at REVISION and at head (see the docstring)")
    p.add_argument("--persons", type=int, default=400)
    p.add_argument("--merchants", type=int, default=2)
    p.add_argument("--generic-before", action="store_true",
                   help="also time REVISION's function on generic plans")
    p.add_argument("--database", default="spent_ab_bench",
                   help="the throwaway database of --migration-ab (dropped first)")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run_ab(args) if args.migration_ab else run(args))))


if __name__ == "__main__":
    main()
