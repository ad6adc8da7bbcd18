"""Scale benchmark: per-core throughput of the main operations with 1 and 2 API processes on
PostgreSQL, side by side in one run (the figures behind ``docs/scaling.md``).

    SATVAULT_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/scale.py --repeat 3

``--quick`` (1 round, 1 s warm-up, 3 s measured, no waiting for a quiet machine) proves the
script runs. Other options: ``--processes 1,2``, ``--ops balance,store,invoice,payment``,
and those of ``benchmarks/lightning.py`` (``--duration``, ``--warmup``, ``--clients``,
``--repeat``, ``--quiet-wait``).

Each round runs every system (``satvault serve --workers N`` for each N of ``--processes``)
once, the order reversed every other round, each on a fresh PostgreSQL database, fresh
simulators (processes of their own, as a real bitcoind and LND would be) and a fresh server.
Per system, ``--clients`` concurrent HTTP clients run each operation in turn:

- ``balance``: ``GET /api/v1/wallets/{payer}`` (the balance read: key check, wallet, ledger
  account, KYC limits left);
- ``store``: ``POST /api/v1/stores/{store}/invoices`` with a fresh ``Idempotency-Key``,
  Lightning only (a BOLT11 from the node per invoice);
- ``invoice``: ``POST /api/v1/wallets/{payee}/deposits {"method": "lightning"}``;
- ``payment``: the payer pays the payee's invoices internally (``POST
  /api/v1/wallets/{payer}/withdrawals``): one ledger transfer plus its bookkeeping. The ledger
  has no HTTP route of its own; ``benchmarks/ledger.py`` measures bare transfers.

Measured per operation over the measured window: requests/s, p50/p99, the CPU (user + system,
from /proc) of the server's whole process tree (the parent with the background workers and
every API process), of our PostgreSQL backends and of the simulators, each per request; from
``pg_stat_database`` of our database the commits, rows written (inserted + updated +
deleted) and rows read per request (the statistics a backend flushes about once a second:
over a 10-s window the figures are close, not exact; rows read include the background
workers' reads in the window), and the WAL written per request (the cluster's WAL position:
an upper bound when other databases write on the same server). ``per_core_ops_s`` is 1 / CPU-seconds
per request: what one fully used core of that kind carries. Medians over ``--repeat``.

Progress goes to stderr; the last stdout line is one JSON object. Not a test, not part of
``make test``; every process started is stopped by its PID at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api import satvault_setup  # the sibling benchmarks

from lightning import (
    INVOICE_MSAT,
    Exhausted,
    Op,
    Processes,
    common_arguments,
    describe,
    drop_pg,
    fill,
    fund_payer,
    log,
    median_of,
    pg_database,
    run_benchmark,
    run_phase,
    satvault_env,
    serve_satvault,
    start_simulators,
    sv_cli,
    wait_until_quiet,
)

OPS = ("balance", "store", "invoice", "payment")
AMOUNT_SAT = 1000
PAYMENTS_PER_PAYER = 30  # the default rules review a wallet's 31st payment out within an hour
PAYER_FUND_MSAT = 1_000_000  # 1,000 sat: 30 payments of 1 sat and fees to spare
PG_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted",
               "tup_fetched", "blks_hit", "blks_read")


async def pg_counters(admin_url: str, name: str) -> dict[str, int]:
    import asyncpg

    dsn = admin_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            f"SELECT {', '.join(PG_COUNTERS)}, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"
            " AS wal FROM pg_stat_database WHERE datname = $1", name)
    finally:
        await conn.close()
    return {k: int(row[k] or 0) for k in (*PG_COUNTERS, "wal")} if row else {}


async def measure(name: str, label: str, clients: list[httpx.AsyncClient], op: Op, pid: int,
                  pg: str, pg_name: str, sim_pids: tuple[int, ...],
                  args: argparse.Namespace) -> dict[str, Any]:
    """``run_phase`` plus our database's counters read at the measured window's two ends."""
    if args.quiet_wait > 0:
        await wait_until_quiet(args.quiet_wait)
    got: dict[str, dict[str, int]] = {}

    async def counters() -> None:
        t0 = time.perf_counter()
        await asyncio.sleep(args.warmup)
        got["a"] = await pg_counters(pg, pg_name)
        await asyncio.sleep(max(0.0, t0 + args.warmup + args.duration - time.perf_counter()))
        got["b"] = await pg_counters(pg, pg_name)

    task = asyncio.create_task(counters())
    ph = await run_phase(name, clients, op, warmup=args.warmup, duration=args.duration,
                         server_pid=pid, db_match=pg_name, sim_pids=sim_pids)
    s = ph.summary()
    if ph.exhausted:
        task.cancel()
    else:
        await task
        n = s["ok"] + s["errors"]
        if n and got.get("a") and got.get("b"):
            d = {k: got["b"][k] - got["a"][k] for k in (*PG_COUNTERS, "wal")}
            s["db_commits_per_request"] = round(d["xact_commit"] / n, 2)
            s["db_rows_written_per_request"] = round(
                (d["tup_inserted"] + d["tup_updated"] + d["tup_deleted"]) / n, 2)
            s["db_rows_fetched_per_request"] = round(d["tup_fetched"] / n, 2)
            # the WAL position is the whole cluster's: other databases' writes count too,
            # so on a shared server this is an upper bound
            s["wal_bytes_per_request_upper_bound"] = round(d["wal"] / n)
    for side in ("server", "db"):
        ms = s.get(f"{side}_cpu_ms_per_request")
        if ms:
            s[f"{side}_per_core_ops_s"] = round(1000.0 / ms, 1)
    describe(f"satvault/{label}", name, s)
    return s


async def more_payers(env: dict[str, str], count: int) -> list[dict[str, str]]:
    """``count`` more users with wallet keys (CLI calls, four at a time)."""
    gate = asyncio.Semaphore(4)

    async def one(i: int) -> dict[str, str]:
        async with gate:
            user = await asyncio.to_thread(sv_cli, env, "user", "create", "--email",
                                           f"payer{i}-{secrets.token_hex(4)}@example.com")
            key = (await asyncio.to_thread(
                sv_cli, env, "apikey", "create", "--owner", user["id"], "--scopes",
                "wallet:read,wallet:write,withdrawals:write"))["api_key"]
        return {"wallet": user["wallet_id"], "key": key}

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def fund_payers(base: str, funder: dict[str, str], payers: list[dict[str, str]]) -> None:
    """Each payer gets ``PAYER_FUND_MSAT`` from the funder, paid internally."""
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as c:
        for p in payers:
            r = await c.post(f"/api/v1/wallets/{p['wallet']}/deposits",
                             headers={"X-Api-Key": p["key"]},
                             json={"method": "lightning", "amount_msat": PAYER_FUND_MSAT})
            if r.status_code != 201:
                raise RuntimeError(f"payer invoice: HTTP {r.status_code} {r.text[:200]}")
            r = await c.post(f"/api/v1/wallets/{funder['wallet']}/withdrawals",
                             headers={"X-Api-Key": funder["key"],
                                      "Idempotency-Key": uuid.uuid4().hex},
                             json={"destination": r.json()["bolt11"]})
            if r.status_code != 201:
                raise RuntimeError(f"funding a payer: HTTP {r.status_code} {r.text[:200]}")


async def run_system(processes: int, work: Path, procs: Processes, args: argparse.Namespace,
                     pg: str) -> dict[str, Any]:
    label = f"{processes}proc"
    db_url, pg_name = await pg_database(pg)
    env, lnd_port = satvault_env(work / f"satvault-{label}", db_url)
    sims: list[subprocess.Popen[bytes]] = []
    try:
        sims = await start_simulators(env, work, procs, label)
        log(f"[satvault/{label}] init, merchant, store, users, API keys …")
        ids = await satvault_setup(env)
        payers = await more_payers(env, args.payers) if "payment" in args.ops else []
        base, proc = await serve_satvault(label, env, work, procs, workers=processes)
        sim_pids = tuple(p.pid for p in sims)
        funder, payee = ids["payer"], ids["payee"]
        readers = payers or [funder]
        pool: collections.deque[str] = collections.deque()
        # payments per payer so far: each stays under the default rules' velocity review
        # (more than 30 payments out within an hour)
        spent = collections.Counter[int]()
        turn = itertools.count()

        def clients(key: str | None) -> list[httpx.AsyncClient]:
            return [httpx.AsyncClient(base_url=base, timeout=60.0,
                                      headers={"X-Api-Key": key} if key else {})
                    for _ in range(args.clients)]

        async def balance(c: httpx.AsyncClient) -> str | None:
            who = readers[next(turn) % len(readers)]
            r = await c.get(f"/api/v1/wallets/{who['wallet']}", headers={"X-Api-Key": who["key"]})
            if r.status_code != 200 or "available_msat" not in r.json():
                return f"HTTP {r.status_code}: {r.text[:120]}"
            return None

        async def store(c: httpx.AsyncClient) -> str | None:
            r = await c.post(f"/api/v1/stores/{ids['store']}/invoices",
                             json={"amount": str(AMOUNT_SAT), "currency": "SATS",
                                   "payment_methods": ["lightning"]},
                             headers={"Idempotency-Key": uuid.uuid4().hex})
            return None if r.status_code == 201 else f"HTTP {r.status_code}: {r.text[:120]}"

        async def invoice(c: httpx.AsyncClient) -> str | None:
            r = await c.post(f"/api/v1/wallets/{payee['wallet']}/deposits",
                             json={"method": "lightning", "amount_msat": INVOICE_MSAT})
            if r.status_code != 201 or not r.json().get("bolt11"):
                return f"HTTP {r.status_code}: {r.text[:120]}"
            pool.append(r.json()["bolt11"])
            return None

        # invoices to pay: one pool of the payee's (--payee one: every payment credits the
        # same wallet) or one per payer, payer i paying payer i+1's (--payee spread)
        pools: list[collections.deque[str]] = [collections.deque() for _ in payers]

        def to_pay(i: int) -> collections.deque[str]:
            return pool if args.payee == "one" else pools[(i + 1) % len(payers)]

        async def payment(c: httpx.AsyncClient) -> str | None:
            free = [i for i in range(len(payers))
                    if spent[i] < PAYMENTS_PER_PAYER and to_pay(i)]
            if not free:
                raise Exhausted
            i = free[next(turn) % len(free)]
            spent[i] += 1
            bolt11 = to_pay(i).popleft()
            r = await c.post(f"/api/v1/wallets/{payers[i]['wallet']}/withdrawals",
                             json={"destination": bolt11},
                             headers={"X-Api-Key": payers[i]["key"],
                                      "Idempotency-Key": uuid.uuid4().hex})
            if r.status_code != 201:
                return f"HTTP {r.status_code}: {r.text[:120]}"
            method = r.json().get("method")
            return None if method == "internal" else f"method {method!r}, not internal"

        async def invoices_of_payers() -> None:
            """``PAYMENTS_PER_PAYER`` invoices of each payer (its own key), untimed."""
            gate = asyncio.Semaphore(args.clients)

            async def one(c: httpx.AsyncClient, j: int) -> None:
                async with gate:
                    r = await c.post(f"/api/v1/wallets/{payers[j]['wallet']}/deposits",
                                     headers={"X-Api-Key": payers[j]["key"]},
                                     json={"method": "lightning", "amount_msat": INVOICE_MSAT})
                if r.status_code != 201:
                    raise RuntimeError(f"payer invoice: HTTP {r.status_code} {r.text[:200]}")
                pools[j].append(r.json()["bolt11"])

            await asyncio.gather(*(one(any_c[k % len(any_c)], j) for k, j in enumerate(
                j for j in range(len(payers)) for _ in range(PAYMENTS_PER_PAYER))))

        store_c, payee_c, any_c = clients(ids["store_key"]), clients(payee["key"]), clients(None)
        out: dict[str, Any] = {}
        try:
            if "balance" in args.ops or "payment" in args.ops:
                await fund_payer(base, funder["key"], funder["wallet"], env, lnd_port)
            if payers:
                log(f"[satvault/{label}] funding {len(payers)} payers internally")
                await fund_payers(base, funder, payers)
            m = {"pid": proc.pid, "pg": pg, "pg_name": pg_name, "sim_pids": sim_pids,
                 "args": args}
            if "balance" in args.ops:
                out["balance"] = await measure("balance", label, any_c, balance, **m)
            if "store" in args.ops:
                out["store"] = await measure("store", label, store_c, store, **m)
            if "invoice" in args.ops or "payment" in args.ops:
                out["invoice"] = await measure("invoice", label, payee_c, invoice, **m)
            if "payment" in args.ops:
                need = len(payers) * PAYMENTS_PER_PAYER
                log(f"  [{label}] pre-creating {need:,} invoices to pay ({args.payee} payee)")
                if args.payee == "one":
                    await fill(payee_c, invoice, need - len(pool))
                else:
                    await invoices_of_payers()
                out["payment"] = await measure("payment", label, any_c, payment, **m)
                if out["payment"].get("exhausted"):
                    log(f"  [{label}] the payers' budget ran out before the window's end: "
                        "the payment figures cover a shorter window (--payers more)")
            if "invoice" not in args.ops:
                out.pop("invoice", None)
        finally:
            for c in store_c + payee_c + any_c:
                await c.aclose()
            procs.stop(proc, timeout=60, sig=signal.SIGINT)
        return out
    finally:
        for sim in sims:
            procs.stop(sim)
        await drop_pg(pg, pg_name)


def summary(result: dict[str, Any], processes: list[int], ops: list[str]) -> dict[str, Any]:
    """Per operation, side by side: rate, server and db CPU per request and per core, and
    the rate of each process count against the first."""
    out: dict[str, Any] = {}
    base = f"satvault_{processes[0]}proc"
    for op in ops:
        row: dict[str, Any] = {}
        for n in processes:
            s = result.get(f"satvault_{n}proc", {}).get(op)
            if not s:
                continue
            row[f"{n}proc"] = {k: s.get(k) for k in (
                "requests_per_s", "p99_ms", "server_cpu", "server_cpu_ms_per_request",
                "server_per_core_ops_s", "db_cpu_ms_per_request", "db_per_core_ops_s",
                "db_commits_per_request", "db_rows_written_per_request",
                "wal_bytes_per_request_upper_bound")}
            b = result.get(base, {}).get(op, {}).get("requests_per_s")
            if b and n != processes[0]:
                row[f"{n}proc"]["rate_vs_first"] = round(s["requests_per_s"] / b, 2)
        out[op] = row
    return out


async def amain(args: argparse.Namespace, procs: Processes, result: dict[str, Any]) -> None:
    pg = args.postgres_url or os.environ.get("SATVAULT_TEST_POSTGRES_URL")
    if not pg:
        raise SystemExit("SATVAULT_TEST_POSTGRES_URL (or --postgres-url) is needed")
    work = Path(tempfile.mkdtemp(prefix="satvault-bench-scale-"))
    log(f"work directory {work} (servers' logs; removed at the end unless --keep)")
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.processes}
    try:
        for r in range(args.repeat):
            rdir = work / f"round{r + 1}"
            rdir.mkdir()
            log(f"=== round {r + 1} of {args.repeat}")
            order = args.processes if r % 2 == 0 else args.processes[::-1]
            for n in order:
                runs[n].append(await run_system(n, rdir, procs, args, pg))
        for n, got in runs.items():
            result[f"satvault_{n}proc"] = {"api_processes": n, **{
                op: median_of([g[op] for g in got]) for op in got[0]}}
        result["summary"] = summary(result, args.processes, args.ops)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = common_arguments(__doc__)
    ap.add_argument("--processes", default="1,2", help="API processes per system")
    ap.add_argument("--ops", default=",".join(OPS), help=f"of {', '.join(OPS)}")
    ap.add_argument("--quick", action="store_true",
                    help="1 round, 1 s warm-up, 3 s measured, no quiet wait (a smoke run)")
    ap.add_argument("--payers", type=int, default=30,
                    help=f"paying wallets (each pays at most {PAYMENTS_PER_PAYER} times, under "
                         "the default rules' hourly velocity review; one funder pays them all, "
                         "so at most 30)")
    ap.add_argument("--payee", choices=("spread", "one"), default="spread",
                    help="spread: payer i pays payer i+1's invoices; one: every payment "
                         "credits the one payee (a hot account)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.warmup, args.duration, args.quiet_wait = 1, 1.0, 3.0, 0.0
        args.payers = min(args.payers, 8)
    args.processes = [int(n) for n in args.processes.split(",") if n]
    args.ops = [o for o in args.ops.split(",") if o]
    if unknown := set(args.ops) - set(OPS):
        ap.error(f"unknown operation(s): {', '.join(sorted(unknown))}")
    result: dict[str, Any] = {
        "benchmark": "scale",
        "config": {"clients": args.clients, "warmup_s": args.warmup,
                   "duration_s": args.duration, "repeat": args.repeat,
                   "processes": args.processes, "ops": args.ops, "quick": args.quick,
                   "payers": args.payers, "payee": args.payee,
                   "payments_per_payer": PAYMENTS_PER_PAYER},
    }
    run_benchmark(amain, args, result)


if __name__ == "__main__":
    main()
