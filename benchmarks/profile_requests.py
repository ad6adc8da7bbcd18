"""Where the server's CPU goes per request: a store invoice with both methods (on-chain and
Lightning), a wallet (Lightning deposit) invoice and an internal payment, on PostgreSQL.

Not a timed test: a measurement. It creates a throwaway database on the server of
``--database-url`` (default ``$SATVAULT_TEST_POSTGRES_URL``; only host, port and credentials
are used), starts the chain and Lightning simulators as processes of their own, sets up a
store and two wallets with the CLI, funds the payer over Lightning through a full ``satvault
serve``, and pre-derives the on-chain address pool (the chain watcher's job in production).

Then, per round and per variant (the order reversed every other round), it starts one API
process as ``satvault serve --workers N`` starts each of its API processes (``api_app``: no
background workers, so nothing but requests runs in it), drives each operation with
``--clients`` concurrent HTTP clients from this process (a real socket; the client's CPU is not
the server's), and reads the server process's user + system CPU from ``/proc`` around the
measured requests: ``cpu_ms`` per request. A variant is another source tree
(``--variant NAME=PATH``, ``PATH/src`` first on ``PYTHONPATH``, e.g. an export of ``main``)
and/or environment variables for the server (``--variant NAME=PATH:VAR=VALUE,…``; an empty
PATH is this tree).

``--profile DIR``: each measured window also runs under cProfile in the server (switched on
and off by signals, so set-up and warm-up are not in it), written as
``DIR/<variant>-<op>-<round>.prof``, and the JSON gets the profile grouped by library (the
own time of C functions is charged to the group of their caller). The profiler slows the
server down, so ``cpu_ms`` of a profiled run is not comparable with an unprofiled one.

    SATVAULT_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/profile_requests.py --requests 300 --clients 4 --repeat 3 \\
        --variant base=/tmp/base --variant new=

Progress goes to stderr; the last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pstats
import signal
import statistics
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
    Processes,
    drop_pg,
    free_port,
    fund_payer,
    log,
    pg_database,
    satvault_env,
    serve_satvault,
    start_simulators,
    wait_http,
)

ROOT = Path(__file__).resolve().parent.parent
OPS = ("store_both", "wallet_invoice", "payment")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Library groups for the profile, matched against a function's file path in this order.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("web: input guard", ("satvault/web/guard.py",)),
    ("web: rate limits", ("satvault/web/ratelimit.py", "/limits/")),
    ("web: problems", ("satvault/web/problems.py",)),
    ("web: auth (deps)", ("satvault/web/deps.py", "satvault/accounts/service.py")),
    ("web: idempotency", ("satvault/web/idempotency.py",)),
    ("web: routes", ("satvault/web/",)),
    ("events", ("satvault/events/",)),
    ("ledger", ("satvault/ledger/",)),
    ("BOLT11 decoding (bolt11, bitstring, bitarray)", ("satvault/lightning/bolt11",
                                                        "/bolt11/", "/bitstring/", "/bitarray/",
                                                        "/bech32", "/coincurve/", "/ecdsa/")),
    ("lightning adapter (backends/lnd.py)", ("satvault/backends/",)),
    ("satvault: other", ("satvault/",)),
    ("FastAPI", ("/fastapi/",)),
    ("Starlette", ("/starlette/",)),
    ("pydantic", ("/pydantic/", "/pydantic_core/")),
    ("uvicorn + httptools", ("/uvicorn/", "/httptools/")),
    ("SQLAlchemy ORM", ("/sqlalchemy/orm/",)),
    ("SQLAlchemy Core (sql: compile, cache keys)", ("/sqlalchemy/sql/",)),
    ("SQLAlchemy engine + dialect", ("/sqlalchemy/engine/", "/sqlalchemy/dialects/",
                                      "/sqlalchemy/pool/")),
    ("SQLAlchemy asyncio bridge + greenlet", ("/sqlalchemy/ext/asyncio/", "/sqlalchemy/util/",
                                               "greenlet")),
    ("SQLAlchemy other", ("/sqlalchemy/",)),
    ("asyncpg", ("asyncpg",)),
    ("httpx/httpcore (client to the node)", ("/httpx/", "/httpcore/", "/h11/", "/anyio/",
                                             "/sniffio/")),
    ("JSON", ("/json/",)),
    ("logging (structlog, logging)", ("/structlog/", "/logging/")),
    ("asyncio + selectors + uvloop", ("/asyncio/", "selectors.py", "/uvloop/")),
    ("other libraries", ("site-packages",)),
    ("typing, dataclasses, enum, other stdlib", ("/python3",)),
]


def group_of(func: tuple[str, int, str]) -> str:
    path = func[0]
    for name, needles in GROUPS:
        if any(n in path for n in needles):
            return name
    return "other"


def grouped_profile(paths: list[Path], requests: int) -> dict[str, Any]:
    """Own time per library group, in ms per request and in % of the profile; C functions'
    own time goes to their callers' groups in proportion to the calls."""
    stats = pstats.Stats(*(str(p) for p in paths))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    groups: collections.Counter[str] = collections.Counter()
    for func, (_cc, _nc, tt, _ct, callers) in raw.items():
        if func[0] == "~" and callers:
            total = sum(c[2] for c in callers.values()) or 1.0
            for caller, c in callers.items():
                groups[group_of(caller)] += tt * c[2] / total
        else:
            groups[group_of(func)] += tt
    whole = sum(groups.values()) or 1.0
    table = {g: {"ms_per_request": round(t * 1000 / requests, 3), "pct": round(100 * t / whole, 1)}
             for g, t in groups.most_common()}
    top_own = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:25]
    top_cum = sorted(((f, v) for f, v in raw.items() if f[0] != "~"),
                     key=lambda kv: kv[1][3], reverse=True)[:40]

    def name(f: tuple[str, int, str]) -> str:
        short = f[0].split("site-packages/")[-1].split("/src/")[-1]
        return f"{short}:{f[1]}({f[2]})"

    return {
        "profiled_ms_per_request": round(whole * 1000 / requests, 3),
        "groups": table,
        "top_tottime": [{"func": name(f), "ms_per_request": round(v[2] * 1000 / requests, 3),
                         "pct": round(100 * v[2] / whole, 1),
                         "calls_per_request": round(v[1] / requests, 2)} for f, v in top_own],
        "top_cumtime": [{"func": name(f), "ms_per_request": round(v[3] * 1000 / requests, 3),
                         "calls_per_request": round(v[1] / requests, 2)} for f, v in top_cum],
    }


# --- the server side (run as a child: ``profile_requests.py --child PORT [PROF_DIR]``) ----

def child(port: int, prof_dir: str | None) -> None:
    """One API process as ``satvault serve --workers N`` runs each of them, plus a profiler
    switched on by SIGUSR1 and written (to the path in ``PROF_OUT``'s file) by SIGUSR2."""
    import cProfile

    import uvicorn

    from satvault.config import get_settings
    from satvault.logs import configure_logging
    from satvault.web.app import api_app

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # wall (the default): a function's time includes the process being descheduled, which on
    # a busy two-core machine lands on whatever runs then; cpu: the process's CPU time only.
    clock = time.process_time if os.environ.get("PROFILE_CLOCK") == "cpu" else time.perf_counter
    profiler = cProfile.Profile(clock)

    def start(*_: Any) -> None:
        profiler.enable()

    def stop(*_: Any) -> None:
        profiler.disable()
        target = Path(prof_dir or ".") / "next.txt"
        out = target.read_text().strip()
        profiler.dump_stats(out)
        profiler.clear()
        Path(out + ".done").touch()

    if prof_dir:
        signal.signal(signal.SIGUSR1, start)
        signal.signal(signal.SIGUSR2, stop)
    import satvault
    sys.stderr.write(f"satvault from {satvault.__file__}\n")
    uvicorn.run(api_app(), host="127.0.0.1", port=port, log_config=None, access_log=False,
                proxy_headers=False, loop=settings.server_loop, http=settings.server_http)


# --- the client side ----------------------------------------------------------------------

def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def drive(base: str, headers: dict[str, str], clients: int, jobs: list[Any]
                ) -> tuple[float, list[float], list[str]]:
    """Run ``jobs`` (coroutine functions of a client) with ``clients`` concurrent clients;
    wall seconds, latencies, errors."""
    queue: collections.deque[Any] = collections.deque(jobs)
    lat: list[float] = []
    errors: list[str] = []

    async def worker(c: httpx.AsyncClient) -> None:
        while queue:
            job = queue.popleft()
            t0 = time.perf_counter()
            err = await job(c)
            lat.append(time.perf_counter() - t0)
            if err:
                errors.append(err)

    cs = [httpx.AsyncClient(base_url=base, headers=headers, timeout=60.0)
          for _ in range(clients)]
    try:
        for c in cs:  # connect first: the measured window holds requests only
            await c.get("/healthz")
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in cs))
        return time.perf_counter() - t0, lat, errors
    finally:
        for c in cs:
            await c.aclose()


class Server:
    def __init__(self, pid: int, base: str, prof_dir: Path | None) -> None:
        self.pid, self.base, self.prof_dir = pid, base, prof_dir

    async def measure(self, name: str, headers: dict[str, str], clients: int,
                      jobs: list[Any], prof_out: Path | None) -> dict[str, Any]:
        if prof_out is not None:
            assert self.prof_dir is not None
            (self.prof_dir / "next.txt").write_text(str(prof_out))
            os.kill(self.pid, signal.SIGUSR1)
            await asyncio.sleep(0.2)
        cpu0 = proc_cpu_s(self.pid)
        wall, lat, errors = await drive(self.base, headers, clients, jobs)
        cpu = proc_cpu_s(self.pid) - cpu0
        if prof_out is not None:
            os.kill(self.pid, signal.SIGUSR2)
            done = Path(str(prof_out) + ".done")
            while not done.exists():
                await asyncio.sleep(0.1)
        n = len(jobs)
        lat.sort()
        return {"op": name, "requests": n, "errors": len(errors),
                "first_error": errors[0] if errors else None,
                "cpu_ms": round(cpu * 1000 / n, 3), "per_s": round(n / wall, 1),
                "p50_ms": round(lat[len(lat) // 2] * 1000, 1),
                "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1)}


def ops_jobs(ids: dict[str, Any], n: int) -> dict[str, Any]:
    store, payer, payee = ids["store"], ids["payer"]["wallet"], ids["payee"]["wallet"]
    pool: list[str] = []

    async def store_both(c: httpx.AsyncClient) -> str | None:
        r = await c.post(f"/api/v1/stores/{store}/invoices",
                         json={"amount": "1000", "currency": "SATS",
                               "payment_methods": ["onchain", "lightning"]},
                         headers={"Idempotency-Key": uuid.uuid4().hex})
        if r.status_code != 201 or not r.json().get("checkout_url"):
            return f"HTTP {r.status_code}: {r.text[:160]}"
        return None

    async def wallet_invoice(c: httpx.AsyncClient) -> str | None:
        r = await c.post(f"/api/v1/wallets/{payee}/deposits",
                         json={"method": "lightning", "amount_msat": INVOICE_MSAT})
        if r.status_code != 201:
            return f"HTTP {r.status_code}: {r.text[:160]}"
        pool.append(r.json()["bolt11"])
        return None

    def payment_job(bolt11: str) -> Any:
        async def pay(c: httpx.AsyncClient) -> str | None:
            r = await c.post(f"/api/v1/wallets/{payer}/withdrawals",
                             json={"destination": bolt11},
                             headers={"Idempotency-Key": uuid.uuid4().hex})
            if r.status_code != 201 or r.json().get("method") != "internal":
                return f"HTTP {r.status_code}: {r.text[:160]}"
            return None
        return pay

    return {"store_both": (store_both, {"X-Api-Key": ids["store_key"]}),
            "wallet_invoice": (wallet_invoice, {"X-Api-Key": ids["payee"]["key"]}),
            "payment": (payment_job, {"X-Api-Key": ids["payer"]["key"]}), "pool": pool}


async def run_variant(name: str, src: Path, extra: dict[str, str], env: dict[str, str],
                      ids: dict[str, Any], args: argparse.Namespace, work: Path,
                      procs: Processes, round_: int) -> list[dict[str, Any]]:
    port = free_port()
    prof_dir = Path(args.profile).resolve() if args.profile else None
    child_env = {**env, **extra, "PYTHONPATH": str(src / "src"),
                 "PROFILE_CLOCK": args.profile_clock}
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(port)]
    if prof_dir:
        prof_dir.mkdir(parents=True, exist_ok=True)
        argv.append(str(prof_dir))
    log_path = work / f"server-{name}-{round_}.log"
    proc = procs.start(f"API process ({name})", argv, env=child_env, log_path=log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/healthz", proc, log_path, 90)
        server = Server(proc.pid, base, prof_dir)
        out = []
        for op in args.ops:
            jobs = ops_jobs(ids, args.requests)
            fn, headers = jobs[op]
            if op == "payment":
                inv, inv_headers = jobs["wallet_invoice"]
                await drive(base, inv_headers, args.clients,
                            [inv] * (args.requests + args.warmup))
                pool = jobs["pool"]
                warm = [fn(b) for b in pool[:args.warmup]]
                measured = [fn(b) for b in pool[args.warmup:]]
            else:
                warm = [fn] * args.warmup
                measured = [fn] * args.requests
            await drive(base, headers, args.clients, warm)
            prof_out = (prof_dir / f"{name}-{op}-{round_}.prof") if prof_dir else None
            res = await server.measure(op, headers, args.clients, measured, prof_out)
            res.update(variant=name, round=round_)
            if prof_out is not None:
                res["profile"] = str(prof_out)
            log(f"  [{name} r{round_}] {op}: {res['cpu_ms']} ms CPU/request, "
                f"{res['per_s']}/s, p50 {res['p50_ms']} ms, errors {res['errors']}"
                + (f" ({res['first_error']})" if res["errors"] else ""))
            out.append(res)
        return out
    finally:
        procs.stop(proc, timeout=30, sig=signal.SIGINT)


def parse_variants(specs: list[str]) -> list[tuple[str, Path, dict[str, str]]]:
    out = []
    for spec in specs or ["current="]:
        name, _, rest = spec.partition("=")
        path, _, assigns = rest.partition(":")
        env = dict(a.split("=", 1) for a in assigns.split(",") if a)
        out.append((name, Path(path).resolve() if path else ROOT, env))
    return out


async def amain(args: argparse.Namespace, procs: Processes, result: dict[str, Any]) -> None:
    url = args.database_url or os.environ.get("SATVAULT_TEST_POSTGRES_URL")
    if not url:
        raise SystemExit("--database-url or SATVAULT_TEST_POSTGRES_URL is needed")
    variants = parse_variants(args.variant)
    work = Path(tempfile.mkdtemp(prefix="satvault-prof-"))
    db_url, pg_name = await pg_database(url)
    try:
        env, lnd_port = satvault_env(work / "home", db_url)
        env["SATVAULT_LOG_LEVEL"] = args.log_level
        sims = await start_simulators(env, work, procs, "prof")
        ids = await satvault_setup(env)
        # the chain watcher's job in production: enough pooled addresses for every round
        subprocess.run([sys.executable, "-c", (
            "import asyncio\n"
            "from satvault.config import get_settings\n"
            "from satvault.db import create_engine, session_factory\n"
            "from satvault.onchain.service import top_up_pool\n"
            "async def main():\n"
            "    e = create_engine(get_settings().database_url)\n"
            "    async with session_factory(e)() as s, s.begin():\n"
            f"        await top_up_pool(s, extra={args.pool})\n"
            "    await e.dispose()\n"
            "asyncio.run(main())\n")], env=env, check=True)
        base, full = await serve_satvault("fund", env, work, procs)
        try:
            await fund_payer(base, ids["payer"]["key"], ids["payer"]["wallet"], env, lnd_port)
        finally:
            procs.stop(full, timeout=60, sig=signal.SIGINT)
        log("set up: store, wallets, payer funded, address pool filled")
        runs: list[dict[str, Any]] = []
        for r in range(args.repeat):
            order = variants if r % 2 == 0 else list(reversed(variants))
            for name, src, extra in order:
                runs += await run_variant(name, src, extra, env, ids, args, work, procs, r)
        for sim in sims:
            procs.stop(sim)
    finally:
        if args.keep_db:
            log(f"kept database {pg_name!r}")
        else:
            await drop_pg(url, pg_name)
    summary: dict[str, Any] = {}
    for name, src, extra in variants:
        for op in args.ops:
            mine = [x for x in runs if x["variant"] == name and x["op"] == op]
            entry = {"cpu_ms_median": round(statistics.median(x["cpu_ms"] for x in mine), 3),
                     "cpu_ms_runs": [x["cpu_ms"] for x in mine],
                     "per_s_median": statistics.median(x["per_s"] for x in mine),
                     "p50_ms_median": statistics.median(x["p50_ms"] for x in mine),
                     "errors": sum(x["errors"] for x in mine), "src": str(src), "env": extra}
            if args.profile:
                entry["profile"] = grouped_profile([Path(x["profile"]) for x in mine],
                                                   sum(x["requests"] for x in mine))
            summary[f"{name}/{op}"] = entry
    result.update(summary=summary, runs=runs)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=None)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--ops", type=lambda s: s.split(","), default=list(OPS))
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=PATH[:VAR=VALUE,…]; PATH empty: this tree")
    p.add_argument("--profile", default=None, help="directory for .prof files")
    p.add_argument("--profile-clock", choices=("wall", "cpu"), default="wall",
                   help="the profiler's clock: wall time, or the server process's CPU time")
    p.add_argument("--pool", type=int, default=4000, help="addresses pre-derived")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--keep-db", action="store_true",
                   help="keep the database (its name on stderr), e.g. to EXPLAIN its queries")
    args = p.parse_args()
    unknown = set(args.ops) - set(OPS)
    if unknown:
        p.error(f"unknown ops {unknown}")
    procs = Processes()
    result: dict[str, Any] = {"args": vars(args)}
    try:
        asyncio.run(amain(args, procs, result))
    finally:
        procs.stop_all()
    import json
    print(json.dumps(result))


if __name__ == "__main__":
    main()
