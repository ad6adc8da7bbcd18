"""On-chain benchmarks: address derivation, block scanning, deposit detection latency.

    python benchmarks/onchain.py [--addresses 20000] [--watched 1000000] [--deposits 20]

1. Derivation: p2wpkh addresses/s from an account xpub with satvault's CKDpub path
   (coincurve), side by side with embit's descriptor derivation, median of 3 runs.
2. Scan: one 4,000-transaction block checked against 1,000,000 watched scripts — the scan
   alone (median of 5), and the full path (the bitcoind adapter fetching the block from
   simnet over HTTP with verbosity 2, parsing it, scanning it).
3. Detection latency on simnet with a real database: pay → seen as incoming (one watcher
   step), and mine → credited (one step); medians over ``--deposits`` payments.

Not a timed test. Progress on stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from embit.descriptor import Descriptor

from satvault.backends.base import Block, OutPoint, Tx, TxOut
from satvault.backends.bitcoind import BitcoindBackend
from satvault.onchain.descriptors import parse_wallet
from satvault.onchain.watcher import scan_block

ZPUB = ("zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868Rv"
        "UUkgDKf31mGDtKsAYz2oz2AGutZYs")
XPUB = ("xpub6CatWdiZiodmUeTDp8LT5or8nmbKNcuyvz7WyksVFkKB4RHwCD3XyuvPEbvqAQY3rAPshWcMLoP2fMF"
        "MKHPJ4ZeZXYVUhLv1VMrjPC7PW6V")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_derivation(n: int) -> dict[str, float]:
    ours, theirs = [], []
    wallet = parse_wallet(ZPUB, "mainnet")
    desc = Descriptor.from_string(f"wpkh({XPUB}/0/*)")
    m = max(500, n // 10)  # embit is slower; fewer addresses keep the run short
    for _ in range(3):
        t = time.perf_counter()
        wallet.derive_range(0, n)
        ours.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        for i in range(m):
            desc.derive(i).address()
        theirs.append(m / (time.perf_counter() - t))
    a, b = statistics.median(ours), statistics.median(theirs)
    log(f"derivation: satvault {a:,.0f} addr/s, embit descriptor {b:,.0f} addr/s")
    assert wallet.derive(0).address == "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    return {"satvault_addr_per_s": round(a), "embit_addr_per_s": round(b),
            "ratio": round(a / b, 2)}


def bench_scan(watched: int) -> dict[str, float]:
    scripts = {b"\x00\x14" + secrets.token_bytes(20): i for i in range(watched)}
    hits = list(scripts)[:25]
    txs = []
    for i in range(4000):
        outs = [TxOut(10_000 + i, b"\x00\x14" + secrets.token_bytes(20)) for _ in range(2)]
        if i % 160 == 0:
            outs.append(TxOut(50_000, hits[i // 160]))
        txs.append(Tx(secrets.token_hex(32), (OutPoint(secrets.token_hex(32), 0),),
                      tuple(outs)))
    block = Block("00" * 32, 1, "00" * 32, 0, tuple(txs))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        found = scan_block(block, scripts)
        times.append((time.perf_counter() - t) * 1000)
    assert len(found) == 25
    ms = statistics.median(times)
    log(f"scan: 4,000 txs vs {watched:,} scripts in {ms:.1f} ms (median of 5)")
    return {"scan_ms": round(ms, 2), "watched": watched, "txs": 4000}


async def bench_fetch_and_scan(watched: int) -> dict[str, float]:
    from satvault.simnet.chain import Chain
    from satvault.simnet.rpc import SimnetServer

    chain = Chain()
    log("building a 4,000-transaction block on simnet …")
    # Split the faucet into many confirmed coins first: unconfirmed chains stop at 25.
    for _ in range(4):
        chain.pay_many([(chain.faucet.receive_address, 2_000_000)] * 1000)
        chain.mine(1)
    for i in range(4000):
        chain.pay(chain.faucet.receive_address, 1000 + i)
    chain.mine(1)
    server = SimnetServer(chain).start()
    backend = BitcoindBackend(server.url)
    scripts = {b"\x00\x14" + secrets.token_bytes(20): i for i in range(watched)}
    try:
        block_hash = await backend.block_hash(chain.height)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            block = await backend.block(block_hash)
            scan_block(block, scripts)
            times.append((time.perf_counter() - t) * 1000)
        assert len(block.txs) >= 4000
    finally:
        await backend.close()
        server.stop()
    ms = statistics.median(times)
    log(f"fetch+parse+scan of a {len(block.txs)}-tx block over RPC: {ms:.0f} ms")
    return {"fetch_parse_scan_ms": round(ms, 1), "block_txs": len(block.txs)}


async def bench_latency(db_url: str, deposits: int) -> dict[str, float]:
    from satvault.accounts import service as acc
    from satvault.composition import Runtime, open_sessions, register_signer_wallets
    from satvault.config import Settings
    from satvault.db import create_engine
    from satvault.migrate import upgrade
    from satvault.onchain.deposits import create_deposit
    from satvault.signer.core import HotSigner
    from satvault.signer.inprocess import InProcessSigner
    from satvault.simnet.chain import Chain
    from satvault.simnet.rpc import SimnetServer

    await asyncio.to_thread(upgrade, db_url)
    chain = Chain()
    server = SimnetServer(chain).start()
    home = Path(tempfile.mkdtemp())
    settings = Settings(database_url=db_url, home=home, network="regtest",
                        chain_backend="bitcoind", bitcoind_url=server.url)
    engine = create_engine(db_url, pool_size=4)
    sessions = open_sessions(engine)
    signer = InProcessSigner(HotSigner(secrets.token_bytes(64), "regtest"))
    async with sessions() as s, s.begin():
        await register_signer_wallets(s, signer, settings)
        user = await acc.create_user(s, email=f"bench{secrets.token_hex(4)}@example.com")
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
    runtime = Runtime.build(settings, sessions, signer=signer)
    await runtime.watcher.step()
    seen, credited = [], []
    try:
        for _ in range(deposits):
            async with sessions() as s, s.begin():
                d = await create_deposit(s, wallet=wallet, settings=settings)
            t = time.perf_counter()
            chain.pay(d.address, 10_000)
            await runtime.watcher.step()
            seen.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            chain.mine(1)
            await runtime.watcher.step()
            credited.append((time.perf_counter() - t) * 1000)
    finally:
        await runtime.close()
        await engine.dispose()
        server.stop()
    a, b = statistics.median(seen), statistics.median(credited)
    log(f"latency ({db_url.split(':')[0]}): pay→incoming {a:.0f} ms, mine→credited {b:.0f} ms")
    return {"pay_to_incoming_ms": round(a, 1), "mine_to_credited_ms": round(b, 1),
            "deposits": deposits}


async def _pg_database(url: str) -> tuple[str, str]:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    name = f"satvault_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                 password=u.password, database="postgres")
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return str(u.set(database=name).render_as_string(hide_password=False)), name


async def _drop_pg(url: str, name: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                 password=u.password, database="postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def main() -> None:
    from satvault.logs import configure_logging

    configure_logging("warning", "json")  # stdout carries only the final JSON line
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addresses", type=int, default=20_000)
    ap.add_argument("--watched", type=int, default=1_000_000)
    ap.add_argument("--deposits", type=int, default=20)
    args = ap.parse_args()
    result: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "derivation": bench_derivation(args.addresses),
        "scan": bench_scan(args.watched),
        "fetch_scan": asyncio.run(bench_fetch_and_scan(args.watched)),
    }
    tmp = Path(tempfile.mkdtemp()) / "bench.db"
    result["latency_sqlite"] = asyncio.run(bench_latency(f"sqlite+aiosqlite:///{tmp}",
                                                         args.deposits))
    pg = os.environ.get("SATVAULT_TEST_POSTGRES_URL")
    if pg:
        url, name = asyncio.run(_pg_database(pg))
        try:
            result["latency_postgres"] = asyncio.run(bench_latency(url, args.deposits))
        finally:
            asyncio.run(_drop_pg(pg, name))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
