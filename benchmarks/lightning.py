"""Lightning benchmark: invoices/s and internal payments/s through the wallet API, side by side
with LNbits, both as real server processes on this machine.

    python benchmarks/lightning.py [--duration 10] [--warmup 2] [--clients 16] [--repeat 1]

Two operations, each with ``--clients`` concurrent clients (one ``httpx.AsyncClient`` each,
all in this process) for ``--warmup`` unmeasured then ``--duration`` measured seconds:

1. invoices: satvault ``POST /api/v1/wallets/{payee}/deposits {"method": "lightning",
   "amount_msat": 1000}``; LNbits ``POST /api/v1/payments {"out": false, "amount": 1}``
   (the payee wallet's invoice key).
2. internal payments: one payer wallet pays the payee's invoices, created before the timed
   window (the invoices of step 1, topped up if the payer could run out): satvault
   ``POST /api/v1/wallets/{payer}/withdrawals {"destination": bolt11}`` with a fresh
   ``Idempotency-Key`` (201 and ``method: internal`` expected); LNbits ``POST /api/v1/payments
   {"out": true, "bolt11": …}`` (admin key; ``checking_id`` ``internal_…`` expected).

satvault: ``satvault init`` / ``user create`` / ``apikey create`` through the CLI on a fresh
``SATVAULT_HOME``, then ``satvault serve`` (built-in chain and Lightning simulators on free
ports, ``SATVAULT_LOG_LEVEL=warning``); the payer is funded over Lightning (a deposit invoice
paid with ``satvault simnet ln-pay``). SQLite always; PostgreSQL too when
``SATVAULT_TEST_POSTGRES_URL`` is set (a throwaway database, dropped at the end).

LNbits: the PyPI package in its own venv (``--lnbits-venv``, created with ``pip install lnbits
"bitstring<5"`` when missing unless ``--no-lnbits-install``), FakeWallet funding source, rate
limit lifted, started from a directory holding a ``lnbits`` symlink to its package (it mounts
``lnbits/static`` relative to the working directory), SQLite in a temporary data folder; wallet
currency emptied (else every invoice tries to fetch a fiat price), payer funded through the
admin API. If it cannot be installed or started, satvault's half still runs and the JSON says
why LNbits is missing.

``--repeat N`` runs N rounds; each round runs every system once, one after the other, each on
a fresh server and database (so load from elsewhere on the machine hits them alike, and one
run's leftovers do not slow the next); the JSON gives medians and every run's rate. Each case
records the CPU used (in cores) by the server process tree, by this client, by our PostgreSQL
backends and by everything else, and the server's CPU milliseconds per request.

Every process started here is stopped by its PID at the end, errors included. ``--profile
DIR`` runs each satvault server under cProfile and writes ``DIR/satvault-<db>-round<N>.prof``
plus a text summary (the figures of a profiled run are inflated by the profiler; the JSON says
so).

Progress goes to stderr; the last line of stdout is one JSON object with both systems' figures
and the ratios. This is a measurement, not a test: nothing here asserts the target.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import io
import json
import os
import platform
import pstats
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TARGET_RATIO = 10.0
INVOICE_MSAT = 1_000  # 1 sat: LNbits' smallest amount
FUND_MSAT = 500_000_000  # 500,000 sat for the payer: far more than any run spends
PAYEE_TIMEOUT = 30.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- processes

class Processes:
    """Every process this benchmark starts, each in its own process group (LNbits serves from
    a child process), stopped by PID: the group gets the signal, then any descendant still
    alive after the timeout gets SIGKILL."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen[bytes], Any]] = []

    def start(self, name: str, argv: list[str], *, env: dict[str, str], log_path: Path,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        out = log_path.open("wb")
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.items.append((name, proc, out))
        log(f"  started {name} (pid {proc.pid})")
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20.0,
             sig: int = signal.SIGTERM) -> None:
        for i, (name, p, out) in enumerate(self.items):
            if p is not proc:
                continue
            family = descendants(p.pid)
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, sig)
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    log(f"  {name} (pid {p.pid}) did not stop; killing it")
                    p.kill()
                    p.wait(10)
            deadline = time.monotonic() + timeout
            while family and time.monotonic() < deadline:
                family = [c for c in family if alive(c)]
                time.sleep(0.2)
            for child in family:
                log(f"  {name}: child pid {child} did not stop; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            out.close()
            del self.items[i]
            log(f"  stopped {name} (pid {p.pid}, exit {p.returncode})")
            return

    def stop_all(self) -> None:
        for _, proc, _ in list(reversed(self.items)):
            with contextlib.suppress(Exception):
                self.stop(proc)


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


async def wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path,
                    timeout: float) -> int:
    """Poll ``url`` until the server answers anything; fail early if the process died."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5.0) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n"
                                   f"{tail(log_path)}")
            try:
                return (await c.get(url)).status_code
            except httpx.HTTPError:
                await asyncio.sleep(0.3)
    raise RuntimeError(f"no answer from {url} within {timeout:.0f} s:\n{tail(log_path)}")


# ------------------------------------------------------------------------------------- CPU

def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants, from /proc."""
    total = 0.0
    for p in (pid, *descendants(pid)):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def matching_cpu(needle: str) -> float:
    """CPU seconds of every live process whose command line contains ``needle`` (our
    PostgreSQL backends show their database name there)."""
    total, tck = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if needle.encode() in (entry / "cmdline").read_bytes():
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tck
    return total


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine, from /proc/stat; 0 where unavailable."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


async def wait_until_quiet(limit: float, threshold: float = 0.3) -> float:
    """Wait up to ``limit`` s for other work to use under ``threshold`` cores; the last load."""
    deadline, load = time.monotonic() + limit, 0.0
    while time.monotonic() < deadline:
        a, t = machine_cpu(), time.monotonic()
        await asyncio.sleep(1.0)
        load = (machine_cpu() - a) / (time.monotonic() - t)
        if load < threshold:
            return load
    log(f"  machine still busy ({load:.2f} cores in use); measuring anyway")
    return load


# ---------------------------------------------------------------------------- measurement

class Exhausted(Exception):
    """No pre-created invoice left to pay."""


Op = Callable[[httpx.AsyncClient], Awaitable[str | None]]


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    exhausted: bool = False
    cpu: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        n = len(lat)
        out: dict[str, Any] = {
            "requests_per_s": round(n / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(lat[n // 2], 1) if n else None,
            "p99_ms": round(lat[min(n - 1, int(n * 0.99))], 1) if n else None,
            "ok": n, "errors": self.errors, "seconds": round(self.seconds, 2),
            **{k: round(v, 2) for k, v in self.cpu.items()},
        }
        for side in ("server", "db", "sim"):
            if n and self.cpu.get(f"{side}_cpu"):
                out[f"{side}_cpu_ms_per_request"] = round(
                    self.cpu[f"{side}_cpu"] * self.seconds * 1000 / n, 2)
        if self.error_samples:
            out["error_samples"] = self.error_samples
        if self.exhausted:
            out["exhausted"] = True
        return out


async def run_phase(name: str, clients: list[httpx.AsyncClient], op: Op, *, warmup: float,
                    duration: float, server_pid: int | None, db_match: str | None = None,
                    sim_pids: tuple[int, ...] = ()) -> Phase:
    """Every client loops ``op`` until the time is up; requests completed inside the measured
    window count, with their latency. CPU is read from /proc at the window's two ends: the
    server's process tree, this client, our PostgreSQL backends (``db_match``), the
    simulators run as processes of their own (``sim_pids``) and everything else."""
    phase = Phase(name)
    t0 = time.perf_counter()
    t_meas, t_end = t0 + warmup, t0 + warmup + duration
    last_done = t_meas

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal last_done
        while True:
            start = time.perf_counter()
            if start >= t_end:
                return
            try:
                err = await op(c)
            except Exhausted:
                phase.exhausted = True
                return
            except httpx.HTTPError as exc:
                err = f"{type(exc).__name__}: {exc}"[:160]
            done = time.perf_counter()
            if t_meas <= done <= t_end:
                if err is None:
                    phase.latencies.append((done - start) * 1000)
                    last_done = max(last_done, done)
                else:
                    phase.errors += 1
                    if len(phase.error_samples) < 3:
                        phase.error_samples.append(err)

    def snapshot() -> tuple[float, ...]:
        return (time.perf_counter(), time.process_time(), machine_cpu(),
                proc_cpu(server_pid) if server_pid else 0.0,
                matching_cpu(db_match) if db_match else 0.0,
                sum(proc_cpu(p) for p in sim_pids))

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, t_meas - time.perf_counter()))
        a = snapshot()
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        b = snapshot()
        wall = b[0] - a[0]
        client, total, server, db, sim = (b[i] - a[i] for i in (1, 2, 3, 4, 5))
        phase.cpu = {"server_cpu": server / wall, "client_cpu": client / wall}
        if db_match:
            phase.cpu["db_cpu"] = db / wall
        if sim_pids:
            phase.cpu["sim_cpu"] = sim / wall
        phase.cpu["other_cpu"] = max(0.0, total - server - client - db - sim) / wall

    samp = asyncio.create_task(sampler())
    await asyncio.gather(*(worker(c) for c in clients))
    if phase.exhausted:
        samp.cancel()
        phase.seconds = max(1e-9, last_done - t_meas)
    else:
        await samp
        phase.seconds = duration
    return phase


async def fill(clients: list[httpx.AsyncClient], op: Op, count: int) -> None:
    """Run ``op`` ``count`` times over the clients, untimed (pre-creating invoices)."""
    left = count

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            err = await op(c)
            if err is not None:
                raise RuntimeError(f"pre-creating invoices failed: {err}")

    await asyncio.gather(*(worker(c) for c in clients))


@dataclass
class Target:
    """One system under test: how to make its two requests."""
    name: str
    base_url: str
    pid: int
    invoice_headers: dict[str, str]
    pay_headers: dict[str, str]
    invoice: Callable[[httpx.AsyncClient, collections.deque[str]], Awaitable[str | None]]
    pay: Callable[[httpx.AsyncClient, str], Awaitable[str | None]]
    db_match: str | None = None  # our PostgreSQL database's name, to count its backends' CPU
    sim_pids: tuple[int, ...] = ()  # simulators in processes of their own, counted apart


def describe(name: str, what: str, s: dict[str, Any]) -> None:
    log(f"  [{name}] {what} {s['requests_per_s']:,.1f}/s p50 {s['p50_ms']} ms "
        f"p99 {s['p99_ms']} ms errors {s['errors']} (server {s.get('server_cpu', 0):.2f} "
        f"cores = {s.get('server_cpu_ms_per_request', 0)} ms/op, client "
        f"{s.get('client_cpu', 0):.2f}, db {s.get('db_cpu', 0):.2f}, sim "
        f"{s.get('sim_cpu', 0):.2f}, other {s.get('other_cpu', 0):.2f})")


async def bench_target(t: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Invoices, then internal payments of invoices created before the timed window."""
    pool: collections.deque[str] = collections.deque()

    def clients(headers: dict[str, str]) -> list[httpx.AsyncClient]:
        return [httpx.AsyncClient(base_url=t.base_url, headers=headers, timeout=60.0)
                for _ in range(args.clients)]

    async def make_invoice(c: httpx.AsyncClient) -> str | None:
        return await t.invoice(c, pool)

    async def pay_one(c: httpx.AsyncClient) -> str | None:
        try:
            bolt11 = pool.popleft()
        except IndexError:
            raise Exhausted from None
        return await t.pay(c, bolt11)

    inv_clients, pay_clients = clients(t.invoice_headers), clients(t.pay_headers)
    try:
        if args.quiet_wait > 0:
            await wait_until_quiet(args.quiet_wait)
        ph = await run_phase("invoices", inv_clients, make_invoice, warmup=args.warmup,
                             duration=args.duration, server_pid=t.pid, db_match=t.db_match,
                             sim_pids=t.sim_pids)
        inv = ph.summary()
        describe(t.name, "invoices", inv)
        # Enough invoices for payments as fast as invoices, plus a margin (a payment does more
        # work than an invoice on both systems; running out retries with more). Not more:
        # every open invoice left over is one more for satvault's listener to sweep.
        need = int(inv["requests_per_s"] * (args.warmup + args.duration)) + 10 * args.clients
        for attempt in range(3):
            if len(pool) < need:
                log(f"  [{t.name}] pre-creating {need - len(pool):,} more invoices "
                    f"(have {len(pool):,})")
                await fill(inv_clients, make_invoice, need - len(pool))
            if args.quiet_wait > 0:
                await wait_until_quiet(args.quiet_wait)
            pp = await run_phase("payments", pay_clients, pay_one, warmup=args.warmup,
                                 duration=args.duration, server_pid=t.pid, db_match=t.db_match,
                                 sim_pids=t.sim_pids)
            if not pp.exhausted or attempt == 2:
                break
            log(f"  [{t.name}] ran out of invoices; retrying with more")
            need = need * 3
        pay = pp.summary()
        describe(t.name, "internal payments", pay)
    finally:
        for c in inv_clients + pay_clients:
            await c.aclose()
    return {"invoices": inv, "payments": pay}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run as is; several: the median of each figure, and every run's rate."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        numbers = [float(v) for v in values if isinstance(v, int | float)
                   and not isinstance(v, bool)]
        if len(numbers) == len(values):
            out[key] = round(statistics.median(numbers), 2)
    out["runs_per_s"] = [r["requests_per_s"] for r in runs]
    out["ok"] = sum(r["ok"] for r in runs)
    out["errors"] = sum(r["errors"] for r in runs)
    return out


# -------------------------------------------------------------------------------- satvault

def sv_cli(env: dict[str, str], *argv: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", "satvault.cli", *argv], env=env,
                         capture_output=True, text=True, timeout=180)
    if res.returncode != 0:
        raise RuntimeError(f"satvault {' '.join(argv[:2])} failed ({res.returncode}): "
                           f"{res.stdout.strip()} {res.stderr.strip()[-500:]}")
    obj: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return obj


def satvault_env(home: Path, db_url: str) -> tuple[dict[str, str], int]:
    """A fresh ``SATVAULT_HOME`` on ``db_url`` with the built-in simulators on free ports;
    returns the environment and the Lightning simulator's port."""
    home.mkdir(parents=True)
    btc_port, lnd_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SATVAULT_")}
    env.update(SATVAULT_HOME=str(home), SATVAULT_DATABASE_URL=db_url,
               SATVAULT_BITCOIND_URL=f"http://simnet:simnet@127.0.0.1:{btc_port}/",
               SATVAULT_LND_URL=f"http://127.0.0.1:{lnd_port}", SATVAULT_LOG_LEVEL="warning",
               # One API key creates as fast as it can: a creation budget out of reach, so the
               # limiter still runs (and its cost is in the figures) but never refuses.
               SATVAULT_RATE_LIMIT_CREATE="1000000/second")
    return env, lnd_port


async def serve_satvault(label: str, env: dict[str, str], work: Path, procs: Processes,
                         profile: Path | None = None, workers: int = 1
                         ) -> tuple[str, subprocess.Popen[bytes]]:
    """``satvault serve`` on a free port (under cProfile when ``profile``; with ``workers``
    API processes); waits for health."""
    port = free_port()
    argv = [sys.executable]
    if profile is not None:
        argv += ["-m", "cProfile", "-o", str(profile)]
    argv += ["-m", "satvault.cli", "serve", "--port", str(port), "--workers", str(workers)]
    log_path = work / f"satvault-{label}.log"
    proc = procs.start(f"satvault serve ({label})", argv, env=env, log_path=log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        status = await wait_http(f"{base}/healthz", proc, log_path, 90)
    except BaseException:
        procs.stop(proc)
        raise
    log(f"[satvault/{label}] serving on {base} (healthz {status})")
    return base, proc


def wallet_operations(payer: str, payee: str) -> tuple[Any, Any]:
    """satvault's two operations: a Lightning invoice of ``payee`` (its BOLT11 pooled for
    payments) and an internal payment of one by ``payer``."""

    async def invoice(c: httpx.AsyncClient, pool: collections.deque[str]) -> str | None:
        r = await c.post(f"/api/v1/wallets/{payee}/deposits",
                         json={"method": "lightning", "amount_msat": INVOICE_MSAT})
        if r.status_code != 201:
            return f"HTTP {r.status_code}: {r.text[:120]}"
        bolt11 = r.json().get("bolt11")
        if not bolt11:
            return "no bolt11 in the answer"
        pool.append(bolt11)
        return None

    async def pay(c: httpx.AsyncClient, bolt11: str) -> str | None:
        return await pay_internally(c, payer, bolt11)

    return invoice, pay


async def pay_internally(c: httpx.AsyncClient, payer: str, bolt11: str,
                         key: str | None = None) -> str | None:
    """One internal payment of ``bolt11`` by wallet ``payer`` (with ``key``, else the
    client's own key); None, or what went wrong."""
    headers = {"Idempotency-Key": uuid.uuid4().hex, **({"X-Api-Key": key} if key else {})}
    r = await c.post(f"/api/v1/wallets/{payer}/withdrawals", json={"destination": bolt11},
                     headers=headers)
    if r.status_code != 201:
        return f"HTTP {r.status_code}: {r.text[:120]}"
    method = r.json().get("method")
    return None if method == "internal" else f"method {method!r}, not internal"


async def satvault_target(label: str, db_url: str, work: Path, procs: Processes,
                          args: argparse.Namespace) -> tuple[Target, subprocess.Popen[bytes]]:
    env, lnd_port = satvault_env(work / f"satvault-{label}", db_url)
    log(f"[satvault/{label}] init, users, API keys …")
    sv_cli(env, "init", "--format", "json")
    tag = secrets.token_hex(4)
    ids = {role: sv_cli(env, "user", "create", "--email", f"{role}-{tag}@example.com")
           for role in ("payer", "payee")}
    keys = {role: sv_cli(env, "apikey", "create", "--owner", u["id"], "--scopes",
                         "wallet:read,wallet:write,withdrawals:write")["api_key"]
            for role, u in ids.items()}
    payer, payee = ids["payer"]["wallet_id"], ids["payee"]["wallet_id"]
    base, proc = await serve_satvault(
        label, env, work, procs, profile_path(args, label, work) if args.profile else None)

    await fund_payer(base, keys["payer"], payer, env, lnd_port)
    log(f"[satvault/{label}] payer funded with {FUND_MSAT:,} msat over Lightning")

    invoice, pay = wallet_operations(payer, payee)

    target = Target(f"satvault/{label}", base, proc.pid, {"X-Api-Key": keys["payee"]},
                    {"X-Api-Key": keys["payer"]}, invoice, pay,
                    db_match=None if label == "sqlite" else db_url.rsplit("/", 1)[-1])
    return target, proc


async def fund_payer(base: str, key: str, payer: str, env: dict[str, str], lnd_port: int,
                     amount_msat: int = FUND_MSAT) -> None:
    """``amount_msat`` into ``payer``'s wallet over Lightning: a deposit invoice paid by the
    simulator's outside node (``satvault simnet ln-pay``), then wait for the credit."""
    async with httpx.AsyncClient(base_url=base, timeout=60.0, headers={"X-Api-Key": key}) as c:
        r = await c.post(f"/api/v1/wallets/{payer}/deposits",
                         json={"method": "lightning", "amount_msat": amount_msat})
        if r.status_code != 201:
            raise RuntimeError(f"funding invoice: HTTP {r.status_code} {r.text[:300]}")
        paid = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "satvault.cli", "simnet", "ln-pay",
                             r.json()["bolt11"], "--url", f"http://127.0.0.1:{lnd_port}"],
            env=env, capture_output=True, text=True, timeout=120)
        if paid.returncode != 0:
            raise RuntimeError(f"ln-pay failed: {paid.stdout} {paid.stderr[-300:]}")
        deadline = time.monotonic() + 60
        while True:
            b = (await c.get(f"/api/v1/wallets/{payer}")).json()
            if b.get("available_msat", 0) >= amount_msat:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the payer was not credited within 60 s: {b}")
            await asyncio.sleep(0.2)


async def start_simulators(env: dict[str, str], work: Path, procs: Processes, label: str
                           ) -> list[subprocess.Popen[bytes]]:
    """The chain and Lightning simulators as processes of their own (``satvault simnet serve``
    and ``satvault simnet ln-serve``) on the ports ``env`` names, and ``env`` switched to them
    as a bitcoind and an LND, so ``satvault serve`` starts none inside itself and the
    simulators' CPU is counted apart from the server's (a real node is a process apart too)."""
    from urllib.parse import urlsplit

    btc_port = urlsplit(env["SATVAULT_BITCOIND_URL"]).port
    lnd_port = urlsplit(env["SATVAULT_LND_URL"]).port
    cli = [sys.executable, "-m", "satvault.cli", "simnet"]
    started = [
        procs.start(f"chain simulator ({label})", [*cli, "serve", "--port", str(btc_port)],
                    env=env, log_path=work / f"simnet-{label}.log"),
        procs.start(f"Lightning simulator ({label})",
                    [*cli, "ln-serve", "--port", str(lnd_port), "--seed",
                     secrets.token_hex(16)], env=env, log_path=work / f"ln-simnet-{label}.log"),
    ]
    try:
        await wait_http(f"http://127.0.0.1:{btc_port}/", started[0],
                        work / f"simnet-{label}.log", 60)
        await wait_http(f"http://127.0.0.1:{lnd_port}/v1/getinfo", started[1],
                        work / f"ln-simnet-{label}.log", 60)
    except BaseException:
        for proc in started:
            procs.stop(proc)
        raise
    env.update(SATVAULT_CHAIN_BACKEND="bitcoind", SATVAULT_LIGHTNING_BACKEND="lnd")
    return started


async def satvault_check(base: str, key: str, wallet: str) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=30.0,
                                 headers={"X-Api-Key": key}) as c:
        return int((await c.get(f"/api/v1/wallets/{wallet}")).json()["available_msat"])


async def run_satvault(label: str, work: Path, procs: Processes, args: argparse.Namespace,
                       pg: str | None = None) -> dict[str, Any]:
    """One fresh server on a fresh database (a throwaway PostgreSQL one when ``pg``)."""
    pg_name = None
    if pg:
        db_url, pg_name = await pg_database(pg)
    else:
        db_url = f"sqlite+aiosqlite:///{work / 'satvault.db'}"
    try:
        target, proc = await satvault_target(label, db_url, work, procs, args)
        try:
            log(f"[satvault/{label}] measuring: {args.clients} clients, {args.warmup:g} s "
                f"warm-up, {args.duration:g} s measured")
            result = await bench_target(target, args)
        finally:
            # SIGINT: uvicorn shuts down and re-raises it as KeyboardInterrupt, so cProfile
            # still writes its file (after SIGTERM uvicorn dies of SIGTERM and nothing is saved)
            procs.stop(proc, timeout=60, sig=signal.SIGINT)
    finally:
        if pg and pg_name:
            with contextlib.suppress(Exception):
                await drop_pg(pg, pg_name)
    if args.profile:
        result["profile"] = summarize_profile(profile_path(args, label, work))
    return result


def profile_path(args: argparse.Namespace, label: str, work: Path) -> Path:
    return Path(args.profile) / f"satvault-{label}-{work.name}.prof"


def summarize_profile(path: Path, top: int = 25) -> str:
    """Write a cumulative-time summary beside the .prof file; return its path."""
    if not path.exists():
        return f"missing: {path}"
    buf = io.StringIO()
    st = pstats.Stats(str(path), stream=buf)
    st.sort_stats("cumulative").print_stats(top * 2)
    st.sort_stats("tottime").print_stats(top)
    out = path.with_suffix(".txt")
    out.write_text(buf.getvalue())
    log(f"  profile written: {path} (summary {out})")
    return str(out)


async def pg_database(url: str) -> tuple[str, str]:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    # A throwaway database; the prefix can be set where databases must follow a naming scheme.
    prefix = os.environ.get("SATVAULT_BENCH_DB_PREFIX", "satvault_bench_ln_")
    name = f"{prefix}{secrets.token_hex(4)}"
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                 password=u.password, database="postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return u.set(drivername="postgresql+asyncpg", database=name).render_as_string(
        hide_password=False), name


async def drop_pg(url: str, name: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                 password=u.password, database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------- LNbits

def lnbits_install(venv: Path, allow: bool) -> str:
    """Path of the installed ``lnbits`` package directory; raises with the reason if none."""
    py = venv / "bin" / "python"
    if not (venv / "bin" / "lnbits").exists():
        if not allow:
            raise RuntimeError(f"LNbits is not installed in {venv} (--no-lnbits-install)")
        log(f"[lnbits] installing into {venv} (pip install lnbits 'bitstring<5') …")
        if not py.exists():
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True,
                           capture_output=True, timeout=300)
        res = subprocess.run([str(py), "-m", "pip", "install", "-q", "lnbits", "bitstring<5"],
                             capture_output=True, text=True, timeout=1800)
        if res.returncode != 0:
            raise RuntimeError(f"pip install lnbits failed: {res.stderr.strip()[-400:]}")
    res = subprocess.run([str(py), "-c", "import importlib.metadata as m, os, lnbits; "
                          "print(os.path.dirname(lnbits.__file__)); print(m.version('lnbits'))"],
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"lnbits does not import: {res.stderr.strip()[-400:]}")
    return res.stdout.strip()


async def lnbits_accounts(base: str) -> dict[str, dict[str, Any]]:
    """First install, admin login, payer and payee wallets (currency emptied), payer funded."""
    user, password = "admin", secrets.token_urlsafe(12)
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as c:
        async def call(method: str, path: str, body: dict[str, Any],
                       headers: dict[str, str] | None = None) -> dict[str, Any]:
            r = await c.request(method, path, json=body, headers=headers)
            if r.status_code >= 300:
                raise RuntimeError(f"LNbits {method} {path}: HTTP {r.status_code} "
                                   f"{r.text[:300]}")
            out: dict[str, Any] = r.json()
            return out

        await call("PUT", "/api/v1/auth/first_install",
                   {"username": user, "password": password, "password_repeat": password})
        token = (await call("POST", "/api/v1/auth", {"username": user, "password": password})
                 )["access_token"]
        wallets = {}
        for role in ("payer", "payee"):
            w = await call("POST", "/api/v1/account", {"name": role})
            await call("PATCH", "/api/v1/wallet", {"currency": ""}, {"X-Api-Key": w["adminkey"]})
            wallets[role] = w
        await call("PUT", "/users/api/v1/balance",
                   {"id": wallets["payer"]["id"], "amount": FUND_MSAT // 1000},
                   {"Authorization": f"Bearer {token}"})
        bal = (await c.get("/api/v1/wallet",
                           headers={"X-Api-Key": wallets["payer"]["inkey"]})).json()
        if int(bal.get("balance", 0)) < FUND_MSAT:
            raise RuntimeError(f"LNbits payer not funded: {bal}")
    log(f"[lnbits] payer funded with {FUND_MSAT // 1000:,} sat through the admin API")
    return wallets


async def lnbits_target(work: Path, procs: Processes, args: argparse.Namespace
                        ) -> tuple[Target, subprocess.Popen[bytes], str]:
    venv = Path(args.lnbits_venv)
    pkg_dir, version = (await asyncio.to_thread(
        lnbits_install, venv, not args.no_lnbits_install)).splitlines()
    run_dir = work / "lnbits-run"
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "lnbits").symlink_to(pkg_dir)
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LNBITS_", "SATVAULT_", "VIRTUAL_ENV"))}
    env.update(LNBITS_BACKEND_WALLET_CLASS="FakeWallet", LNBITS_DATA_FOLDER=str(run_dir / "data"),
               LNBITS_ADMIN_UI="true", LNBITS_RATE_LIMIT_NO="100000000",
               LNBITS_RATE_LIMIT_UNIT="second", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    log_path = work / "lnbits.log"
    proc = procs.start(f"lnbits {version}", [str(venv / "bin" / "lnbits"), "--host",
                                             "127.0.0.1", "--port", str(port)],
                       env=env, log_path=log_path, cwd=run_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/api/v1/health", proc, log_path, 120)
        log(f"[lnbits] serving on {base}")
        wallets = await lnbits_accounts(base)
    except BaseException:
        procs.stop(proc)
        raise

    async def invoice(c: httpx.AsyncClient, pool: collections.deque[str]) -> str | None:
        r = await c.post("/api/v1/payments", json={"out": False, "amount": INVOICE_MSAT // 1000,
                                                   "memo": ""})
        if r.status_code != 201:
            return f"HTTP {r.status_code}: {r.text[:120]}"
        bolt11 = r.json().get("bolt11") or r.json().get("payment_request")
        if not bolt11:
            return "no bolt11 in the answer"
        pool.append(bolt11)
        return None

    async def pay(c: httpx.AsyncClient, bolt11: str) -> str | None:
        r = await c.post("/api/v1/payments", json={"out": True, "bolt11": bolt11})
        if r.status_code != 201:
            return f"HTTP {r.status_code}: {r.text[:120]}"
        cid = str(r.json().get("checking_id", ""))
        return None if cid.startswith("internal_") else f"checking_id {cid[:40]!r}: not internal"

    target = Target("lnbits", base, proc.pid, {"X-Api-Key": wallets["payee"]["inkey"]},
                    {"X-Api-Key": wallets["payer"]["adminkey"]}, invoice, pay)
    return target, proc, version


async def run_lnbits(work: Path, procs: Processes, args: argparse.Namespace) -> dict[str, Any]:
    target, proc, version = await lnbits_target(work, procs, args)
    try:
        log(f"[lnbits] measuring: {args.clients} clients, {args.warmup:g} s warm-up, "
            f"{args.duration:g} s measured")
        result = await bench_target(target, args)
    finally:
        procs.stop(proc, timeout=30)
    return {"version": version, "funding_source": "FakeWallet", "database": "sqlite",
            **result}


# ------------------------------------------------------------------------------------ main

def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for op in ("invoices", "payments"):
        a, b = ours[op]["requests_per_s"], theirs[op]["requests_per_s"]
        out[op] = round(a / b, 2) if b else None
        out[f"{op}_meets_{TARGET_RATIO:g}x"] = bool(b) and a / b >= TARGET_RATIO
        # Server CPU per request, theirs / ours: the ratio a CPU-bound server would reach on
        # a quiet machine, and less sensitive than requests/s to load from elsewhere.
        ca = ours[op].get("server_cpu_ms_per_request")
        cb = theirs[op].get("server_cpu_ms_per_request")
        out[f"{op}_cpu_per_request"] = round(cb / ca, 2) if ca and cb else None
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform()}


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {op: median_of([r[op] for r in runs]) for op in ("invoices", "payments")}
    for key in runs[0]:
        if key not in out:
            out[key] = runs[0][key] if key != "profile" else [r[key] for r in runs]
    return out


async def amain(args: argparse.Namespace, procs: Processes, result: dict[str, Any]) -> None:
    """``--repeat`` rounds; each round runs every system once, one after the other, each on a
    fresh server and database, so load from elsewhere on the machine hits them alike."""
    work = Path(tempfile.mkdtemp(prefix="satvault-bench-ln-"))
    log(f"work directory {work} (servers' logs; removed at the end unless --keep or on error)")
    result["work_dir"] = str(work)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        result["profiled"] = True
    pg = args.postgres_url or os.environ.get("SATVAULT_TEST_POSTGRES_URL")
    labels = [] if args.skip_sqlite else ["sqlite"]
    if pg and not args.skip_postgres:
        labels.append("postgres")
    elif not pg:
        result["satvault_postgres"] = {"skipped": "SATVAULT_TEST_POSTGRES_URL is not set"}
    runs: dict[str, list[dict[str, Any]]] = {f"satvault_{label}": [] for label in labels}
    runs["lnbits"] = []
    lnbits_missing = "skipped (--skip-lnbits)" if args.skip_lnbits else None
    for r in range(args.repeat):
        rdir = work / f"round{r + 1}"
        rdir.mkdir()
        log(f"=== round {r + 1} of {args.repeat}")
        for label in labels:
            runs[f"satvault_{label}"].append(await run_satvault(
                label, rdir, procs, args, pg if label == "postgres" else None))
        if lnbits_missing is None:
            try:
                runs["lnbits"].append(await run_lnbits(rdir, procs, args))
            except Exception as exc:  # report and carry on: satvault's half stands alone
                log(f"[lnbits] unavailable: {exc}")
                lnbits_missing = f"{type(exc).__name__}: {exc}"[:600]
    for key, got in runs.items():
        if got:
            result[key] = combine(got)
    if lnbits_missing is not None:
        result["lnbits"] = {"missing": lnbits_missing, **result.get("lnbits", {})}
    lnb = result.get("lnbits", {})
    if "invoices" in lnb:
        result["ratios"] = {label: ratios(result[f"satvault_{label}"], lnb) for label in labels}
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        del result["work_dir"]


def common_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark against LNbits shares (this one and ``api.py``)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per case")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per case")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds (every system once per round, fresh servers); medians")
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="before each case, wait up to this long for the machine to go quiet")
    ap.add_argument("--postgres-url", default=None,
                    help="default: $SATVAULT_TEST_POSTGRES_URL (host/port/credentials only)")
    ap.add_argument("--skip-lnbits", action="store_true")
    ap.add_argument("--lnbits-venv",
                    default=os.environ.get("LNBITS_VENV", "/work/lnbits-venv"))
    ap.add_argument("--no-lnbits-install", action="store_true",
                    help="do not create the LNbits venv when it is missing")
    return ap


def run_benchmark(amain_: Callable[[argparse.Namespace, Processes, dict[str, Any]],
                                   Awaitable[None]],
                  args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Run ``amain_``; whatever happens, stop every process started and print ``result`` as
    the last line (with ``error`` set when it failed). SIGTERM counts as an interrupt."""
    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    procs = Processes()
    result["machine"] = machine()
    try:
        asyncio.run(amain_(args, procs, result))
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        log(f"benchmark failed: {result['error']}")
        raise
    finally:
        procs.stop_all()
        print(json.dumps(result), flush=True)


def main() -> None:
    ap = common_arguments(__doc__)
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (homes, databases, server logs)")
    ap.add_argument("--profile", metavar="DIR", default=None,
                    help="run the satvault servers under cProfile, writing DIR/*.prof")
    args = ap.parse_args()
    result: dict[str, Any] = {
        "benchmark": "lightning",
        "config": {"clients": args.clients, "warmup_s": args.warmup,
                   "duration_s": args.duration, "repeat": args.repeat,
                   "invoice_msat": INVOICE_MSAT},
        "target": f">= {TARGET_RATIO:g}x LNbits on invoices/s and internal payments/s",
    }
    run_benchmark(amain, args, result)


if __name__ == "__main__":
    main()
