"""API benchmark: store invoices, wallet invoices and internal payments through the HTTP API at
16 concurrent clients, satvault on PostgreSQL behind 1 and 2 API processes, side by side in one
run with LNbits doing the same.

The run of record (PostgreSQL for satvault; LNbits from ``/work/lnbits-venv``, created with
``pip install lnbits "bitstring<5"`` when missing)::

    SATVAULT_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/api.py --repeat 3

Options: ``--processes 1,2`` (API processes per PostgreSQL system: ``satvault serve --workers
N``, N processes on one port, the background workers in the parent), ``--sqlite`` (also
satvault on SQLite, one process), ``--cases lightning,both``, ``--no-payments``,
``--in-process-simulators``, ``--payers N`` (satvault's payments from N payer wallets,
client i from payer i mod N, instead of all from one), ``--variant NAME:VAR=VALUE,…``
(repeatable: the same systems again with these environment variables for ``satvault
serve``, e.g. a lever switched off; ``NAME:`` alone is the unchanged server),
``--skip-lnbits``, and those of ``benchmarks/lightning.py`` (``--duration``, ``--warmup``,
``--clients``, ``--repeat``, ``--quiet-wait``, ``--lnbits-venv``), ``--profile DIR``. A
lever A/B, satvault only::

    .venv/bin/python benchmarks/api.py --processes 1 --skip-lnbits --repeat 3 \\
        --variant on: --variant asyncio:SATVAULT_SERVER_LOOP=asyncio,SATVAULT_SERVER_HTTP=h11

What each satvault system does, on a fresh database and fresh servers:

- ``store_<case>``: ``POST /api/v1/stores/{store}/invoices`` with a fresh ``Idempotency-Key``
  and a store API key, 1000 SATS; case ``lightning``: ``payment_methods: ["lightning"]``, a
  BOLT11 from the node per invoice (the work LNbits does); case ``both`` (the merchant
  default): a fresh on-chain address too, the unified BIP21 and the checkout URL.
- ``invoices``: ``POST /api/v1/wallets/{payee}/deposits {"method": "lightning"}``;
  ``payments``: one payer wallet pays those invoices internally, ``POST
  /api/v1/wallets/{payer}/withdrawals`` (as ``benchmarks/lightning.py``), screened by the
  shipped risk rules with their two velocity-count limits raised (``bench_rule_set``: else the
  one payer's 31st payment in an hour is held for review and its 101st in a day refused).

LNbits (FakeWallet, SQLite): ``invoices`` and ``payments`` with ``POST /api/v1/payments``.

CPU: every phase reads /proc at both ends of its measured window: the server's process tree
(``server_cpu``, in cores, and ``server_cpu_ms_per_request``: the parent and every API
process), our PostgreSQL backends (``db_cpu``), the chain and Lightning simulators
(``sim_cpu``: by default they run as processes of their own, ``satvault simnet serve`` and
``ln-serve``, which ``satvault serve`` then uses as a bitcoind and an LND, as a real node would
be; LNbits' FakeWallet runs inside LNbits), this client and everything else (``other_cpu``).
On a shared machine the CPU per request is the steadier figure; rates swing with other load.

Each round runs every system once, one after the other (the order reversed every other round),
each on fresh servers and databases; ``--repeat`` gives medians and every round's rate.
Progress goes to stderr; the last line of stdout is one JSON object: per system and operation
the rate, p50/p99, CPU, and the ratios to LNbits (``rate``: ours / theirs; ``cpu``: their
server CPU per request / ours). Every process started is stopped by its PID at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning import (  # the sibling benchmark, not satvault.lightning
    FUND_MSAT,
    INVOICE_MSAT,
    Processes,
    Target,
    bench_target,
    common_arguments,
    describe,
    drop_pg,
    fund_payer,
    lnbits_target,
    log,
    median_of,
    pay_internally,
    pg_database,
    run_benchmark,
    run_phase,
    satvault_env,
    serve_satvault,
    start_simulators,
    sv_cli,
    wait_until_quiet,
    wallet_operations,
)

TARGET_RATIO = 10.0
AMOUNT_SAT = 1000
CASES = {"lightning": ["lightning"], "both": ["onchain", "lightning"]}


@dataclass
class System:
    """One satvault configuration measured in every round."""
    label: str
    database: str  # "sqlite" or "postgres"
    processes: int = 1
    env: dict[str, str] = field(default_factory=dict)  # for `satvault serve` only


def systems_of(args: argparse.Namespace, pg: str | None) -> list[System]:
    variants: list[tuple[str, dict[str, str]]] = []
    for spec in args.variant or [":"]:
        name, _, assignments = spec.partition(":")
        env = dict(a.split("=", 1) for a in assignments.split(",") if a)
        variants.append((name, env))
    out = []
    for name, env in variants:
        suffix = f"-{name}" if name else ""
        if args.sqlite:
            out.append(System(f"sqlite{suffix}", "sqlite", 1, env))
        if pg:
            out += [System(f"postgres_{n}proc{suffix}", "postgres", n, env)
                    for n in args.processes]
    return out


# The shipped rules' two velocity-count rules review a wallet's 31st payment out within an
# hour and refuse its 101st within a day; the benchmark's one payer makes ~1,000 a round.
# Raised above that, every payment is screened as before (the same feature statement, the
# same 13 rules evaluated) and none is held or refused.
BENCH_VELOCITY_COUNT = 10**9


async def bench_rule_set(db_url: str) -> None:
    """Make the shipped rule set, with its velocity-count limits raised, the live one."""
    from satvault.db import create_engine, session_factory
    from satvault.risk import service as risk

    doc = json.loads(risk.default_rule_set_json())
    raised = 0
    for rule in doc["rules"]:
        for cond in rule["when"].get("all", []):
            # the wallet's windows, or the person's (the shipped set's since migration 0067)
            if str(cond.get("field", "")).removeprefix("person.").startswith("velocity.count."):
                cond["value"] = BENCH_VELOCITY_COUNT
                raised += 1
    assert raised == 2, doc
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as s, s.begin():
            rs = await risk.propose_rule_set(s, rules=doc, actor="bench:a",
                                             note="benchmark: velocity counts raised")
            await risk.approve_rule_set(s, version=rs.version, actor="bench:b")
    finally:
        await engine.dispose()


async def satvault_setup(env: dict[str, str], payers: int = 1) -> dict[str, Any]:
    """A merchant, a store and its key; ``payers`` payers and a payee with wallet keys (CLI
    calls, a few chains at a time); the benchmark's rule set (:func:`bench_rule_set`).
    ``payer``: the first payer, ``payers``: all of them."""
    await asyncio.to_thread(sv_cli, env, "init", "--format", "json")
    await bench_rule_set(env["SATVAULT_DATABASE_URL"])

    def merchant_side() -> dict[str, Any]:
        merchant = sv_cli(env, "merchant", "create", "--name", "Bench Shop")
        store = sv_cli(env, "store", "create", "--merchant", merchant["id"], "--name", "Online")
        key = sv_cli(env, "apikey", "create", "--owner", store["id"], "--scopes",
                     "invoices:write,invoices:read")["api_key"]
        return {"store": store["id"], "store_key": key}

    def wallet_side(role: str) -> dict[str, Any]:
        email = f"{role}-{secrets.token_hex(4)}@example.com"
        user = sv_cli(env, "user", "create", "--email", email)
        key = sv_cli(env, "apikey", "create", "--owner", user["id"], "--scopes",
                     "wallet:read,wallet:write,withdrawals:write")["api_key"]
        return {"wallet": user["wallet_id"], "key": key}

    shop, payee, *all_payers = await asyncio.gather(
        asyncio.to_thread(merchant_side), asyncio.to_thread(wallet_side, "payee"),
        *(asyncio.to_thread(wallet_side, f"payer{i}") for i in range(payers)))
    return {**shop, "payer": all_payers[0], "payers": all_payers, "payee": payee}


async def satvault_run(system: System, work: Path, procs: Processes, args: argparse.Namespace,
                       pg: str | None) -> dict[str, Any]:
    """One fresh server (and simulators) on a fresh database; every operation."""
    label = system.label
    pg_name = None
    if system.database == "postgres":
        assert pg is not None
        db_url, pg_name = await pg_database(pg)
    else:
        db_url = f"sqlite+aiosqlite:///{work / f'satvault-{label}.db'}"
    env, lnd_port = satvault_env(work / f"satvault-{label}", db_url)
    sims: list[subprocess.Popen[bytes]] = []
    try:
        if not args.in_process_simulators:
            sims = await start_simulators(env, work, procs, label)
        log(f"[satvault/{label}] init, merchant, store, users, API keys …")
        ids = await satvault_setup(env, args.payers)
        profile = (Path(args.profile) / f"satvault-{label}-{work.name}.prof"
                   if args.profile else None)
        base, proc = await serve_satvault(label, {**env, **system.env}, work, procs,
                                          profile=profile, workers=system.processes)
        sim_pids = tuple(p.pid for p in sims)
        try:
            out: dict[str, Any] = {}
            for case in args.cases:
                out[f"store_{case}"] = await store_invoices(
                    label, case, base, ids, proc.pid, pg_name, sim_pids, args)
            if args.payments:
                for payer in ids["payers"]:  # the outside node's funds, shared out
                    await fund_payer(base, payer["key"], payer["wallet"], env, lnd_port,
                                     FUND_MSAT // len(ids["payers"]))
                out.update(await bench_target(wallet_target(label, base, proc.pid, ids,
                                                            pg_name, sim_pids), args))
            return out
        finally:
            # SIGINT: uvicorn shuts down cleanly (its workers too)
            procs.stop(proc, timeout=60, sig=signal.SIGINT)
    finally:
        for sim in sims:
            procs.stop(sim)
        if pg_name:
            assert pg is not None
            await drop_pg(pg, pg_name)


async def store_invoices(label: str, case: str, base: str, ids: dict[str, Any], pid: int,
                         pg_name: str | None, sim_pids: tuple[int, ...],
                         args: argparse.Namespace) -> dict[str, Any]:
    methods = CASES[case]

    async def create(c: httpx.AsyncClient) -> str | None:
        r = await c.post(f"/api/v1/stores/{ids['store']}/invoices",
                         json={"amount": str(AMOUNT_SAT), "currency": "SATS",
                               "payment_methods": methods},
                         headers={"Idempotency-Key": uuid.uuid4().hex})
        if r.status_code != 201:
            return f"HTTP {r.status_code}: {r.text[:120]}"
        body = r.json()
        if body.get("status") != "new" or not body.get("checkout_url"):
            return f"unexpected invoice: {str(body)[:120]}"
        return None

    clients = [httpx.AsyncClient(base_url=base, headers={"X-Api-Key": ids["store_key"]},
                                 timeout=60.0) for _ in range(args.clients)]
    try:
        if args.quiet_wait > 0:
            await wait_until_quiet(args.quiet_wait)
        ph = await run_phase(f"store_{case}", clients, create, warmup=args.warmup,
                             duration=args.duration, server_pid=pid, db_match=pg_name,
                             sim_pids=sim_pids)
    finally:
        for c in clients:
            await c.aclose()
    s = ph.summary()
    describe(f"satvault/{label}", f"store invoices ({case})", s)
    return s


def wallet_target(label: str, base: str, pid: int, ids: dict[str, Any], pg_name: str | None,
                  sim_pids: tuple[int, ...]) -> Target:
    payer, payee = ids["payer"]["wallet"], ids["payee"]["wallet"]

    invoice, pay = wallet_operations(payer, payee)
    if len(ids["payers"]) > 1:
        pay = spread_payments(ids["payers"])

    return Target(f"satvault/{label}", base, pid, {"X-Api-Key": ids["payee"]["key"]},
                  {"X-Api-Key": ids["payer"]["key"]}, invoice, pay, db_match=pg_name,
                  sim_pids=sim_pids)


def spread_payments(payers: list[dict[str, Any]]) -> Any:
    """Internal payments where each client pays from a payer of its own (client i from payer
    i mod N, its key sent with each request), instead of every client from the one payer."""
    slot: dict[int, int] = {}

    async def pay(c: httpx.AsyncClient, bolt11: str) -> str | None:
        payer = payers[slot.setdefault(id(c), len(slot)) % len(payers)]
        return await pay_internally(c, payer["wallet"], bolt11, payer["key"])

    return pay


async def lnbits_run(work: Path, procs: Processes, args: argparse.Namespace) -> dict[str, Any]:
    target, proc, version = await lnbits_target(work, procs, args)
    try:
        log(f"[lnbits] measuring: {args.clients} clients")
        got = await bench_target(target, args)
    finally:
        procs.stop(proc, timeout=30)
    return {"version": version, "funding_source": "FakeWallet", "database": "sqlite", **got}


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Per operation of ours, against LNbits' invoices (every kind of invoice) or payments."""
    out: dict[str, Any] = {}
    for op, s in ours.items():
        if not isinstance(s, dict) or "requests_per_s" not in s:
            continue
        t = theirs["payments" if op == "payments" else "invoices"]
        rate = round(s["requests_per_s"] / t["requests_per_s"], 2) if t["requests_per_s"] \
            else None
        a, b = s.get("server_cpu_ms_per_request"), t.get("server_cpu_ms_per_request")
        out[op] = {"rate": rate, "cpu": round(b / a, 2) if a and b else None,
                   "meets_rate_target": rate is not None and rate >= TARGET_RATIO,
                   "meets_cpu_target": bool(a and b and b / a >= TARGET_RATIO)}
    return out


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, dict) and "requests_per_s" in value:
            out[key] = median_of([r[key] for r in runs])
        else:
            out[key] = value
    return out


async def amain(args: argparse.Namespace, procs: Processes, result: dict[str, Any]) -> None:
    work = Path(tempfile.mkdtemp(prefix="satvault-bench-api-"))
    log(f"work directory {work} (servers' logs; removed at the end unless --keep)")
    pg = args.postgres_url or os.environ.get("SATVAULT_TEST_POSTGRES_URL")
    if not pg:
        result["satvault_postgres"] = {"skipped": "SATVAULT_TEST_POSTGRES_URL is not set"}
    systems = systems_of(args, pg)
    runs: dict[str, list[dict[str, Any]]] = {s.label: [] for s in systems}
    lnbits_runs: list[dict[str, Any]] = []
    lnbits_missing: str | None = "skipped (--skip-lnbits)" if args.skip_lnbits else None
    try:
        for r in range(args.repeat):
            rdir = work / f"round{r + 1}"
            rdir.mkdir()
            log(f"=== round {r + 1} of {args.repeat}")
            order: list[System | None] = [*systems, None]  # None: LNbits
            for system in order if r % 2 == 0 else order[::-1]:
                if system is not None:
                    runs[system.label].append(await satvault_run(system, rdir, procs, args, pg))
                elif lnbits_missing is None:
                    try:
                        lnbits_runs.append(await lnbits_run(rdir, procs, args))
                    except Exception as exc:  # satvault's half stands alone
                        log(f"[lnbits] unavailable: {exc}")
                        lnbits_missing = f"{type(exc).__name__}: {exc}"[:600]
        for system in systems:
            result[f"satvault_{system.label}"] = {
                "database": system.database, "api_processes": system.processes,
                "serve_env": system.env, **combine(runs[system.label])}
        if lnbits_runs:
            result["lnbits"] = combine(lnbits_runs)
            result["ratios"] = {s.label: ratios(result[f"satvault_{s.label}"], result["lnbits"])
                                for s in systems}
        if lnbits_missing is not None:
            result["lnbits"] = {"missing": lnbits_missing}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = common_arguments(__doc__)
    ap.add_argument("--processes", default="1,2",
                    help="API processes for each PostgreSQL system, comma-separated")
    ap.add_argument("--server-workers", type=int, default=None,
                    help="(older form) the same as --processes 1,N")
    ap.add_argument("--sqlite", action="store_true", help="also satvault on SQLite")
    ap.add_argument("--cases", default="lightning,both",
                    help=f"store invoice cases, of {', '.join(CASES)}")
    ap.add_argument("--no-payments", dest="payments", action="store_false",
                    help="skip wallet invoices and internal payments")
    ap.add_argument("--in-process-simulators", action="store_true",
                    help="let `satvault serve` run the simulators in its own process")
    ap.add_argument("--variant", action="append", metavar="NAME:VAR=VALUE,…",
                    help="run every system also with these variables for `satvault serve`")
    ap.add_argument("--payers", type=int, default=1,
                    help="satvault's payments from this many payer wallets, client i paying "
                         "from payer i mod N (default 1: every client from the one payer, "
                         "as LNbits' run)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--profile", metavar="DIR", default=None,
                    help="run `satvault serve` under cProfile, writing DIR/*.prof (one API "
                         "process only: the API processes of --workers are not profiled)")
    args = ap.parse_args()
    args.processes = ([1, args.server_workers] if args.server_workers
                      else [int(n) for n in args.processes.split(",") if n])
    args.cases = [c for c in args.cases.split(",") if c]
    if unknown := set(args.cases) - set(CASES):
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "api",
        "config": {"clients": args.clients, "warmup_s": args.warmup,
                   "duration_s": args.duration, "repeat": args.repeat,
                   "processes": args.processes, "cases": args.cases,
                   "payments": args.payments, "payers": args.payers,
                   "variants": args.variant,
                   "simulators": "in-process" if args.in_process_simulators
                   else "separate processes", "amount_sat": AMOUNT_SAT,
                   "invoice_msat": INVOICE_MSAT},
        "target": f">= {TARGET_RATIO:g}x LNbits on requests/s and on server CPU per request",
    }
    run_benchmark(amain, args, result)


if __name__ == "__main__":
    main()
