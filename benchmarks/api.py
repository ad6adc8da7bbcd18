"""API benchmark: store invoices created per second, p50/p99, through the HTTP API at 16
concurrent clients, satvault on SQLite and PostgreSQL, side by side in one run with LNbits
creating invoices.

    python benchmarks/api.py [--duration 10] [--warmup 2] [--clients 16] [--repeat 1]
                             [--server-workers 2]

satvault: ``POST /api/v1/stores/{store}/invoices`` with a fresh ``Idempotency-Key`` and a store
API key (``invoices:write``), amount 1000 SATS, in two cases:

- ``lightning``: ``payment_methods: ["lightning"]``, a BOLT11 from the Lightning node per
  invoice (the same work LNbits does);
- ``both`` (the default for merchants): a fresh on-chain address from the xpub, a BOLT11, the
  unified BIP21 and the checkout URL.

LNbits: ``POST /api/v1/payments {"out": false, "amount": 1000}`` with the wallet's invoice key
(FakeWallet, SQLite). Servers, databases and LNbits are started exactly as in
``benchmarks/lightning.py`` (whose helpers this file uses): real processes, fresh databases,
one system at a time, every process stopped by its PID at the end.

On PostgreSQL it runs a second time with ``--server-workers`` API processes (``satvault
serve --workers N``: the API in N processes, the background workers in the parent).

The last line of output is one JSON object with every figure, the ratios and the machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning import (  # the sibling benchmark, not satvault.lightning
    Processes,
    common_arguments,
    describe,
    drop_pg,
    lnbits_target,
    log,
    median_of,
    pg_database,
    run_benchmark,
    run_phase,
    satvault_env,
    serve_satvault,
    sv_cli,
    wait_until_quiet,
)

TARGET_RATIO = 10.0
AMOUNT_SAT = 1000
CASES = {"lightning": ["lightning"], "both": ["onchain", "lightning"]}


async def satvault_run(label: str, work: Path, procs: Processes, args: argparse.Namespace,
                       pg: str | None, workers: int = 1) -> dict[str, Any]:
    """One fresh server on a fresh database: a merchant, a store, a store key; both cases."""
    pg_name = None
    if pg:
        db_url, pg_name = await pg_database(pg)
    else:
        db_url = f"sqlite+aiosqlite:///{work / f'satvault-{label}.db'}"
    env, _ = satvault_env(work / f"satvault-{label}", db_url)
    try:
        log(f"[satvault/{label}] init, merchant, store, store key …")
        sv_cli(env, "init", "--format", "json")
        merchant = sv_cli(env, "merchant", "create", "--name", "Bench Shop")
        store = sv_cli(env, "store", "create", "--merchant", merchant["id"], "--name", "Online")
        key = sv_cli(env, "apikey", "create", "--owner", store["id"], "--scopes",
                     "invoices:write,invoices:read")["api_key"]
        base, proc = await serve_satvault(label, env, work, procs, workers=workers)
        try:
            out: dict[str, Any] = {}
            for case, methods in CASES.items():
                async def create(c: httpx.AsyncClient, methods: list[str] = methods
                                 ) -> str | None:
                    r = await c.post(f"/api/v1/stores/{store['id']}/invoices",
                                     json={"amount": str(AMOUNT_SAT), "currency": "SATS",
                                           "payment_methods": methods},
                                     headers={"Idempotency-Key": uuid.uuid4().hex})
                    if r.status_code != 201:
                        return f"HTTP {r.status_code}: {r.text[:120]}"
                    body = r.json()
                    if body.get("status") != "new" or not body.get("checkout_url"):
                        return f"unexpected invoice: {str(body)[:120]}"
                    return None

                clients = [httpx.AsyncClient(base_url=base, headers={"X-Api-Key": key},
                                             timeout=60.0) for _ in range(args.clients)]
                try:
                    if args.quiet_wait > 0:
                        await wait_until_quiet(args.quiet_wait)
                    ph = await run_phase(case, clients, create, warmup=args.warmup,
                                         duration=args.duration, server_pid=proc.pid,
                                         db_match=pg_name)
                finally:
                    for c in clients:
                        await c.aclose()
                out[case] = ph.summary()
                describe(f"satvault/{label}", f"store invoices ({case})", out[case])
            return out
        finally:
            procs.stop(proc, timeout=60, sig=signal.SIGINT)
    finally:
        if pg and pg_name:
            await drop_pg(pg, pg_name)


async def lnbits_run(work: Path, procs: Processes, args: argparse.Namespace) -> dict[str, Any]:
    target, proc, version = await lnbits_target(work, procs, args)
    try:

        async def create(c: httpx.AsyncClient) -> str | None:
            r = await c.post("/api/v1/payments",
                             json={"out": False, "amount": AMOUNT_SAT, "memo": ""})
            if r.status_code != 201:
                return f"HTTP {r.status_code}: {r.text[:120]}"
            return None if (r.json().get("bolt11") or r.json().get("payment_request")) \
                else "no bolt11 in the answer"

        clients = [httpx.AsyncClient(base_url=target.base_url, headers=target.invoice_headers,
                                     timeout=60.0) for _ in range(args.clients)]
        try:
            if args.quiet_wait > 0:
                await wait_until_quiet(args.quiet_wait)
            ph = await run_phase("invoices", clients, create, warmup=args.warmup,
                                 duration=args.duration, server_pid=proc.pid)
        finally:
            for c in clients:
                await c.aclose()
        s = ph.summary()
        describe("lnbits", "invoices", s)
        return {"version": version, "funding_source": "FakeWallet", "database": "sqlite",
                "invoices": s}
    finally:
        procs.stop(proc, timeout=30)


async def amain(args: argparse.Namespace, procs: Processes, result: dict[str, Any]) -> None:
    work = Path(tempfile.mkdtemp(prefix="satvault-bench-api-"))
    pg = args.postgres_url or os.environ.get("SATVAULT_TEST_POSTGRES_URL")
    labels = ["sqlite"] + (["postgres"] if pg else [])
    many = f"postgres_{args.server_workers}proc"
    if pg and args.server_workers > 1:
        labels.append(many)
    if not pg:
        result["satvault_postgres"] = {"skipped": "SATVAULT_TEST_POSTGRES_URL is not set"}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    lnbits_runs: list[dict[str, Any]] = []
    lnbits_missing: str | None = "skipped (--skip-lnbits)" if args.skip_lnbits else None
    try:
        for r in range(args.repeat):
            rdir = work / f"round{r + 1}"
            rdir.mkdir()
            log(f"=== round {r + 1} of {args.repeat}")
            for label in labels:
                runs[label].append(await satvault_run(
                    label, rdir, procs, args, pg if label.startswith("postgres") else None,
                    workers=args.server_workers if label == many else 1))
            if lnbits_missing is None:
                try:
                    lnbits_runs.append(await lnbits_run(rdir, procs, args))
                except Exception as exc:  # satvault's half stands alone
                    log(f"[lnbits] unavailable: {exc}")
                    lnbits_missing = f"{type(exc).__name__}: {exc}"[:600]
        for label, got in runs.items():
            result[f"satvault_{label}"] = {case: median_of([g[case] for g in got])
                                           for case in CASES}
        if lnbits_runs:
            result["lnbits"] = {**lnbits_runs[0],
                                "invoices": median_of([g["invoices"] for g in lnbits_runs])}
            theirs = result["lnbits"]["invoices"]["requests_per_s"]
            result["ratios"] = {
                f"{label}_{case}": round(result[f"satvault_{label}"][case]["requests_per_s"]
                                         / theirs, 2) if theirs else None
                for label in labels for case in CASES}
            result["meets_target"] = {k: v is not None and v >= TARGET_RATIO
                                      for k, v in result["ratios"].items()}
        if lnbits_missing is not None:
            result["lnbits"] = {"missing": lnbits_missing}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = common_arguments(__doc__)
    ap.add_argument("--server-workers", type=int, default=2,
                    help="also run PostgreSQL with this many API processes (`satvault serve "
                         "--workers N`); 1 to skip")
    args = ap.parse_args()
    args.profile = None  # lnbits_target reads the lightning benchmark's options
    result: dict[str, Any] = {
        "benchmark": "api",
        "config": {"clients": args.clients, "warmup_s": args.warmup,
                   "server_workers": args.server_workers,
                   "duration_s": args.duration, "repeat": args.repeat,
                   "amount_sat": AMOUNT_SAT},
        "target": f">= {TARGET_RATIO:g}x LNbits on invoices created per second",
    }
    run_benchmark(amain, args, result)


if __name__ == "__main__":
    main()
