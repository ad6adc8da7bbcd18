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


async def _fresh(base: str) -> str:
    import asyncpg

    u = make_url(base)
    admin = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                  password=u.password, database="postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{_NAME}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{_NAME}"')
    finally:
        await admin.close()
    return u.set(database=_NAME).render_as_string(hide_password=False)


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url")
    p.add_argument("--wallets", type=int, default=50)
    p.add_argument("--withdrawals", type=int, default=200)
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=7)
    print(json.dumps(asyncio.run(run(p.parse_args()))))


if __name__ == "__main__":
    main()
