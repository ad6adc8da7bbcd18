"""The floor of the stack: what the least API endpoint built on satvault's stack (uvicorn with
uvloop and httptools, FastAPI and pydantic, SQLAlchemy on asyncpg, httpx to a node) costs per
request on this machine, layer by layer, side by side in one run with satvault's own wallet
invoice, store invoice and internal payment (set up as ``api.py`` does: the simulators in
processes of their own, the rules' velocity counts raised; ``--payers N`` spreads its
payments over N payers too) and with LNbits'. Issue 10 asks for 10x less server CPU per
invoice than LNbits: this says how much of that budget the stack itself takes before any of
satvault's work.

    SATVAULT_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/floor.py --repeat 3

The levels (``benchmarks/floor_app.py`` has the servers; each adds to the one before):
``bare`` (a route answering a constant), ``api`` (+ a validated JSON body, a bearer token
looked up in memory, a typed answer), ``db`` (+ one INSERT in its own transaction on
PostgreSQL), ``node`` (+ one call to a node over HTTP before it, as an invoice's BOLT11 is
asked of LND), and ``pay`` (an internal payment's shape: the node call, then seven
statements in one transaction, every payment from one payer as in ``api.py``; ``pay2``: the
lock, then the rest as one statement; ``pay1``: all as one statement in one round trip;
``paygroup``: one payer's waiting payments group-committed, seven statements per group;
``paygroupseq``: the same groups, each payment's six statements in a savepoint of its own;
``--payers N``: the clients pay from N wallets instead of one; ``--own-payees``: each pays a
payee of its own instead of all the one payee),
each with 1 and 2 API processes (``--processes``). ``--levels`` picks some;
``--skip-satvault``, ``--skip-lnbits`` leave those out; the options of
``benchmarks/lightning.py`` (``--duration``, ``--warmup``, ``--clients``, ``--repeat``,
``--quiet-wait``, ``--lnbits-venv``) apply.

Every level runs on a fresh server (and a fresh PostgreSQL database for ``db`` and ``node``),
16 clients by default, CPU from /proc as in ``lightning.py``: the server's
(``server_cpu_ms_per_request``), our PostgreSQL backends' (``db_…``) and the node's
(``sim_…``). Rounds alternate the order. Progress on stderr; the last line of stdout is one
JSON object: per level the medians, and ``budget``: per operation LNbits' server CPU per
request / 10 and rate x 10 (the issue's targets for satvault) beside each level's and
satvault's.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api import System, satvault_run  # the API benchmark's satvault, set up the same way
from floor_app import BILLS, LEVELS, PAYEE, PAYERS, TOKEN  # the servers this benchmark starts

from lightning import (  # the sibling benchmark, not satvault.lightning
    TARGET_RATIO,
    Processes,
    common_arguments,
    describe,
    drop_pg,
    free_port,
    log,
    median_of,
    pg_database,
    run_benchmark,
    run_lnbits,
    run_phase,
    wait_http,
    wait_until_quiet,
)

HERE = Path(__file__).resolve().parent
_TABLES = (
    "CREATE TABLE floor_invoices (id varchar PRIMARY KEY, wallet varchar NOT NULL, "
    "amount_msat bigint NOT NULL CHECK (amount_msat > 0), memo varchar NOT NULL, "
    "bolt11 varchar)",
    # the pay levels'
    "CREATE TABLE floor_wallets (id varchar PRIMARY KEY, "
    "balance_msat bigint NOT NULL CHECK (balance_msat >= 0))",
    f"INSERT INTO floor_wallets SELECT 'payer-' || g, 9000000000000000 "
    f"FROM generate_series(0, {PAYERS - 1}) g",
    f"INSERT INTO floor_wallets VALUES ('{PAYEE}', 0)",
    f"INSERT INTO floor_wallets SELECT 'payee-' || g, 0 FROM generate_series(0, {PAYERS - 1}) g",
    "CREATE TABLE floor_bills (id int PRIMARY KEY, paid int NOT NULL)",
    f"INSERT INTO floor_bills SELECT g, 0 FROM generate_series(0, {BILLS - 1}) g",
    "CREATE TABLE floor_withdrawals (id varchar PRIMARY KEY, wallet varchar NOT NULL "
    "REFERENCES floor_wallets, bill int NOT NULL REFERENCES floor_bills, "
    "amount_msat bigint NOT NULL CHECK (amount_msat > 0), "
    "created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE floor_outbox (id bigserial PRIMARY KEY, subject varchar NOT NULL, "
    "payload varchar NOT NULL)",
    "CREATE TABLE floor_keys (owner varchar NOT NULL, key varchar NOT NULL, "
    "response varchar NOT NULL, PRIMARY KEY (owner, key))",
)


def uvicorn_argv(target: str, port: int, workers: int) -> list[str]:
    """uvicorn as ``satvault serve`` runs it: uvloop, httptools, no access log; ``workers``
    processes on one port."""
    return [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port",
            str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--workers", str(workers)]


async def start(procs: Processes, name: str, target: str, env: dict[str, str], work: Path,
                workers: int = 1) -> tuple[str, Any]:
    port = free_port()
    log_path = work / f"{name}.log"
    proc = procs.start(name, uvicorn_argv(target, port, workers), env=env, log_path=log_path,
                       cwd=HERE)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/", proc, log_path, 60)
    except BaseException:
        procs.stop(proc)
        raise
    return base, proc


async def run_level(level: str, workers: int, work: Path, procs: Processes,
                    args: argparse.Namespace, pg: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SATVAULT_", "FLOOR_"))}
    env["FLOOR_LEVEL"] = level
    if args.own_payees:
        env["FLOOR_PAYEES"] = "own"
    started, sims, pg_name = [], [], None
    try:
        if level not in ("bare", "api"):  # a database of its own
            db_url, pg_name = await pg_database(pg)
            await create_tables(db_url)
            env["FLOOR_DATABASE_URL"] = db_url
        if level == "node" or level.startswith("pay"):  # a node of its own
            node_env = {k: v for k, v in env.items() if k != "FLOOR_LEVEL"}
            node_base, node = await start(procs, f"node-{level}", "floor_app:node_app",
                                          node_env, work)
            started.append(node)
            sims.append(node.pid)
            env["FLOOR_NODE_URL"] = node_base
        base, server = await start(procs, f"floor-{level}-{workers}proc", "floor_app:app",
                                   env, work, workers)
        started.append(server)
        clients = [httpx.AsyncClient(base_url=base, timeout=60.0,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
                   for _ in range(args.clients)]
        # client i pays from wallet i mod --payers (one payer: every payment waits its turn)
        payer_of = {id(c): i % args.payers for i, c in enumerate(clients)}

        async def op(c: httpx.AsyncClient) -> str | None:
            if level.startswith("pay"):
                r = await c.post("/v1/payments", headers={"Idempotency-Key": uuid.uuid4().hex},
                                 json={"bill": random.randrange(BILLS), "amount_msat": 1_000,
                                       "payer": payer_of[id(c)]})
            else:
                r = await c.post("/v1/invoices", json={"amount_msat": 1_000, "memo": "floor"})
            return None if r.status_code in (200, 201) else f"HTTP {r.status_code} {r.text[:80]}"

        try:
            if args.quiet_wait > 0:
                await wait_until_quiet(args.quiet_wait)
            phase = await run_phase(level, clients, op, warmup=args.warmup,
                                    duration=args.duration, server_pid=server.pid,
                                    db_match=pg_name, sim_pids=tuple(sims))
        finally:
            for c in clients:
                await c.aclose()
        summary = phase.summary()
        describe(f"floor/{level}/{workers}proc", "requests", summary)
        return summary
    finally:
        for proc in reversed(started):
            procs.stop(proc)
        if pg_name:
            await drop_pg(pg, pg_name)


async def create_tables(db_url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(db_url)
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                 password=u.password, database=u.database)
    try:
        for ddl in _TABLES:
            await conn.execute(ddl)
    finally:
        await conn.close()


async def amain(args: argparse.Namespace, procs: Processes, result: dict[str, Any]) -> None:
    pg = args.postgres_url or os.environ.get("SATVAULT_TEST_POSTGRES_URL")
    if not pg:
        raise SystemExit("set SATVAULT_TEST_POSTGRES_URL (or --postgres-url)")
    if not 1 <= args.payers <= PAYERS:
        raise SystemExit(f"--payers must be 1 to {PAYERS}")
    levels = [lv for lv in args.levels.split(",") if lv]
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise SystemExit(f"unknown levels {sorted(unknown)}; choose from {LEVELS}")
    processes = [int(n) for n in args.processes.split(",") if n]
    systems: list[str] = [f"floor_{lv}_{n}proc" for n in processes for lv in levels]
    if not args.skip_satvault:
        systems.append("satvault_postgres")
    if not args.skip_lnbits:
        systems.append("lnbits")
    work = Path(tempfile.mkdtemp(prefix="satvault-bench-floor-"))
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    try:
        for r in range(args.repeat):
            rdir = work / f"round{r + 1}"
            rdir.mkdir()
            order = systems if r % 2 == 0 else list(reversed(systems))
            log(f"=== round {r + 1} of {args.repeat}: {', '.join(order)}")
            for system in order:
                if system.startswith("floor_"):
                    _, level, n = system.split("_")
                    runs[system].append(await run_level(level, int(n[:-4]), rdir, procs, args,
                                                        pg))
                elif system == "satvault_postgres":
                    runs[system].append(await satvault_run(
                        System("postgres_1proc", "postgres"), rdir, procs, args, pg))
                else:
                    runs[system].append(await run_lnbits(rdir, procs, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for system, got in runs.items():
        if system.startswith("floor_"):
            result[system] = median_of(got)
        else:
            result[system] = {key: median_of([g[key] for g in got])
                              if isinstance(value, dict) else value
                              for key, value in got[0].items()}
    result["payers"], result["own_payees"] = args.payers, args.own_payees
    result["budget"] = budget(result, systems)


def budget(result: dict[str, Any], systems: list[str]) -> dict[str, Any]:
    """Issue 10's CPU targets (LNbits' server CPU per request / 10), per operation, beside
    each floor level's and satvault's server CPU per request and rate."""
    out: dict[str, Any] = {}
    for op, levels in (("invoices", ("bare", "api", "db", "node")),
                       ("payments", ("pay", "pay2", "pay1", "paygroup", "paygroupseq"))):
        theirs = result.get("lnbits", {}).get(op, {})
        ours = result.get("satvault_postgres", {}).get(op, {})
        row: dict[str, Any] = {
            "lnbits_ms": theirs.get("server_cpu_ms_per_request"),
            "target_ms": round(theirs["server_cpu_ms_per_request"] / TARGET_RATIO, 3)
            if theirs.get("server_cpu_ms_per_request") else None,
            "target_per_s": round(theirs["requests_per_s"] * TARGET_RATIO, 1)
            if theirs.get("requests_per_s") else None,
            "satvault_ms": ours.get("server_cpu_ms_per_request"),
            "satvault_per_s": ours.get("requests_per_s")}
        for s in systems:
            if s.startswith("floor_") and s.split("_")[1] in levels:
                row[f"{s}_ms"] = result[s].get("server_cpu_ms_per_request")
                row[f"{s}_per_s"] = result[s].get("requests_per_s")
                row[f"{s}_p99_ms"] = result[s].get("p99_ms")
        out[op] = row
    return out


def main() -> None:
    ap = common_arguments(__doc__)
    ap.add_argument("--levels", default=",".join(LEVELS),
                    help=f"comma-separated, of {', '.join(LEVELS)}")
    ap.add_argument("--processes", default="1,2",
                    help="API processes per floor server (uvicorn --workers), comma-separated")
    ap.add_argument("--payers", type=int, default=1,
                    help=f"wallets the pay levels' clients pay from (1 to {PAYERS}; 1, as "
                         "api.py: all 16 clients pay from one wallet)")
    ap.add_argument("--own-payees", action="store_true",
                    help="the pay levels: each payer pays a payee of its own (default: all "
                         "pay one payee, whose balance row every payment updates)")
    ap.add_argument("--skip-satvault", action="store_true")
    # api.py's options, fixed here: a Lightning store invoice too, simulators apart
    ap.set_defaults(profile=None, cases=["lightning"], payments=True,
                    in_process_simulators=False)
    args = ap.parse_args()
    run_benchmark(amain, args, {"benchmark": "floor", "clients": args.clients})


if __name__ == "__main__":
    main()
