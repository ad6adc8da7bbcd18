"""What open event streams cost the server: database statements per second and the server
process's CPU, with no stream open and with ``--streams`` idle streams open (checkout pages
waiting for a payment: one invoice each, no event coming), per source tree.

Not a timed test: a measurement. For each variant (``--variant NAME=PATH``: ``PATH/src`` first
on ``PYTHONPATH``, e.g. an export of ``main``; an empty PATH is this tree) and each round (the
order reversed every other round), it migrates a fresh database (SQLite in a temporary
directory, or a throwaway PostgreSQL database on the server of ``--database-url``), writes one
event for each of ``--streams`` invoices, and starts one API process (the app without
background workers, as ``satvault serve --workers N`` starts each API process) whose engine
counts the statements it sends (read through ``SIGUSR1``). It measures ``--seconds`` with no
stream open, opens the streams from this process over real sockets (each one's first event
received), lets them settle, and measures ``--seconds`` again: statements per second and the
server's user + system CPU from ``/proc``, as a share of one core.

    .venv/bin/python benchmarks/streams.py --streams 200 --seconds 10 --repeat 2 \\
        --variant before=/tmp/main-export --variant after=

Progress goes to stderr; the last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning import drop_pg, free_port, log, pg_database  # the sibling benchmarks

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The server: seeds the events, counts the engine's statements, serves one API process.
SERVER = r"""
import asyncio, os, signal, sys
import uvicorn
from sqlalchemy import event
import satvault
from satvault.config import Settings
from satvault.events.outbox import emit
from satvault.migrate import upgrade
from satvault.web.app import create_app

settings = Settings()
upgrade(settings.database_url)
app = create_app(settings, start_workers=False, api_only=False)
engine, sessions = app.state.engine, app.state.sessions
count = 0

def counted(*_args):
    global count
    count += 1

async def main():
    async with sessions() as s, s.begin():
        for i in range(int(os.environ["BENCH_INVOICES"])):
            await emit(s, type="invoice.created", subject_type="invoice",
                       subject_id=f"inv_{i}", payload={"id": f"inv_{i}", "status": "new"})
    event.listen(engine.sync_engine, "before_cursor_execute", counted)
    out = os.environ["BENCH_COUNT_FILE"]

    def report():
        with open(out + ".tmp", "w") as f:
            f.write(str(count))
        os.replace(out + ".tmp", out)

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, report)
    print("serving", satvault.__file__, file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host="127.0.0.1", port=int(os.environ["BENCH_PORT"]),
                            log_config=None, access_log=False, lifespan="on")
    await uvicorn.Server(config).serve()

asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


async def statements(proc: subprocess.Popen[bytes], count_file: Path) -> int:
    before = count_file.stat().st_mtime_ns if count_file.exists() else 0
    proc.send_signal(signal.SIGUSR1)
    for _ in range(500):
        if count_file.exists() and count_file.stat().st_mtime_ns != before:
            with contextlib.suppress(ValueError):
                return int(count_file.read_text())
        await asyncio.sleep(0.01)
    raise RuntimeError("the server did not report its statement count")


async def window(proc: subprocess.Popen[bytes], count_file: Path, seconds: float
                 ) -> dict[str, float]:
    s0, c0, t0 = await statements(proc, count_file), cpu_seconds(proc.pid), time.monotonic()
    await asyncio.sleep(seconds)
    s1, c1, t1 = await statements(proc, count_file), cpu_seconds(proc.pid), time.monotonic()
    wall = t1 - t0
    return {"statements_per_s": round((s1 - s0) / wall, 1),
            "cpu_percent": round(100 * (c1 - c0) / wall, 2)}


async def hold_stream(client: httpx.AsyncClient, invoice: str, ready: asyncio.Event,
                      opened: list[int], total: int) -> None:
    async with client.stream("GET", "/api/v1/events/stream",
                             params={"invoice_id": invoice}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"stream refused: {r.status_code} {await r.aread()!r}")
        live = False
        async for line in r.aiter_lines():  # held open until cancelled
            if not live and line.startswith("id:"):  # its first event: the stream is live
                live = True
                opened.append(1)
                if len(opened) == total:
                    ready.set()


async def run_once(name: str, tree: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = f"{tree}/src" + (f":{env['PYTHONPATH']}"
                                             if env.get("PYTHONPATH") else "")
    tmp = Path(tempfile.mkdtemp(prefix="satvault-bench-streams-"))
    pg_name = None
    if args.database_url:
        url, pg_name = await pg_database(args.database_url)
    else:
        url = f"sqlite+aiosqlite:///{tmp}/satvault.db"
    port = free_port()
    count_file = tmp / "statements"
    env.update({
        "SATVAULT_DATABASE_URL": url, "SATVAULT_HOME": str(tmp),
        "SATVAULT_RATE_LIMIT_ENABLED": "false", "SATVAULT_STREAMS_PER_ADDRESS": "10000",
        "SATVAULT_STREAMS_MAX": "20000", "SATVAULT_LOG_LEVEL": "warning",
        "BENCH_PORT": str(port), "BENCH_COUNT_FILE": str(count_file),
        "BENCH_INVOICES": str(args.streams)})
    proc = subprocess.Popen([sys.executable, "-c", SERVER], env=env, cwd=tmp)
    try:
        base = f"http://127.0.0.1:{port}"
        limits = httpx.Limits(max_connections=args.streams + 10)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/healthz")).status_code in (200, 503):
                        break
                if proc.poll() is not None:
                    raise RuntimeError(f"{name}: the server exited")
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            idle = await window(proc, count_file, args.seconds)
            log(f"{name}: no stream: {idle}")
            ready, opened = asyncio.Event(), []
            tasks = [asyncio.create_task(hold_stream(client, f"inv_{i}", ready, opened,
                                                     args.streams))
                     for i in range(args.streams)]
            try:
                async with asyncio.timeout(120):
                    await ready.wait()
                await asyncio.sleep(3.0)  # every stream past its opening
                busy = await window(proc, count_file, args.seconds)
                log(f"{name}: {args.streams} streams: {busy}")
                failed = [t for t in tasks if t.done()]
                if failed:
                    raise RuntimeError(f"{name}: {len(failed)} streams ended early: "
                                       f"{failed[0].exception()!r}")
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if pg_name is not None:
            await drop_pg(args.database_url, pg_name)
    return {"no_stream": idle, "streams": busy}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--database-url", default="",
                        help="a PostgreSQL server (a throwaway database is made on it); "
                             "empty: SQLite")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=PATH (a source tree; empty PATH: this one)")
    args = parser.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variant] or [("this", "")]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    for round_ in range(args.repeat):
        order = variants if round_ % 2 == 0 else list(reversed(variants))
        for name, tree in order:
            runs[name].append(await run_once(name, tree, args))
    summary = {
        name: {phase: {metric: statistics.median(r[phase][metric] for r in rs)
                       for metric in ("statements_per_s", "cpu_percent")}
               for phase in ("no_stream", "streams")}
        for name, rs in runs.items()}
    print(json.dumps({"benchmark": "streams", "streams": args.streams,
                      "seconds": args.seconds, "repeat": args.repeat,
                      "database": "postgresql" if args.database_url else "sqlite",
                      "median": summary, "runs": runs}))


if __name__ == "__main__":
    asyncio.run(main())
