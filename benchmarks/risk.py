"""Rules-engine benchmark: one screening (the wallet's row lock on PostgreSQL, the one
feature query, 20 rules evaluated) at 10,000 accounts, timed from the call to the verdict.

    SATVAULT_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/risk.py            # PostgreSQL (a fresh risk_bench db)
    .venv/bin/python benchmarks/risk.py --sqlite       # SQLite, in a temporary file

Each account has ``--history`` (30) withdrawals and half as many deposits in the last 30
days, and ``--old-history`` (60) withdrawals and half as many deposits 31-360 days back, which
the window must not read. ``--evaluations`` (3000, after ``--warmup`` 300) screenings run on
random accounts, each in its own transaction begun before the clock starts (the BEGIN is the
payment's, not the screening's; on PostgreSQL a ``SELECT 1`` sends it, since asyncpg begins
with the first statement). Each measurement runs in a fresh interpreter; with
``--variant NAME=SRC`` (repeatable) it imports satvault from SRC (for example ``git archive
<commit> src`` extracted), so versions are compared side by side in one run, their order
alternating over ``--repeat`` rounds; ``--index-phases`` measures every variant without, then
with, migration 0021's index. ``--reuse`` keeps a database seeded by an earlier run
(``--database`` names the PostgreSQL one, ``--sqlite-path`` the SQLite file).
``--migration-ab REV`` measures with the database at revision REV and at head, alternating
per round (what a migration's new function costs); ``--variant NAME=SRC@REV`` measures that
variant with the database at REV (a tree before a migration beside the tree after it, each
with its own functions). ``--merchants N``: every other user owns N merchants, each with a
wallet and a history like the user's, screened too (persons of several wallets, migration
0067); ``--wallet-rules``: the shipped rules on the wallet's windows (which a tree before 0067
can read) rather than the person's.

Progress goes to stderr; the last line of stdout is one JSON object: per phase and variant,
the medians over the rounds of the median and p99 latency in milliseconds, the statements
per screening, and this process's CPU per screening (``cpu_ms``, time.process_time: user and
system time of SQLAlchemy, the driver, the features and the rules; the stable figure on a
shared machine), with every round's figures and load average.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.engine import make_url

from satvault.accounts.models import Merchant, User, Wallet
from satvault.db import create_engine, session_factory, utcnow
from satvault.ledger.models import LedgerAccount, LedgerTransfer
from satvault.migrate import upgrade
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.risk import service as risk
from satvault.risk.features import Event

EXTRA_RULES: list[dict[str, Any]] = [  # 7 more, for 20 in all
    {"id": "in_velocity_1h", "score": 20, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "in"},
        {"field": "velocity.count.1h", "op": "gt", "value": 20}]}},
    {"id": "many_counterparties_24h", "score": 30, "when": {
        "field": "agg.out.counterparties.24h", "op": "gt", "value": 20}},
    {"id": "mean_jump_7d", "score": 20, "when": {"all": [
        {"field": "agg.out.mean.7d", "op": "gt", "value": 0},
        {"field": "amount_msat", "op": "gt", "ref": "agg.out.sum.7d"}]}},
    {"id": "lightning_large", "score": 10, "when": {"all": [
        {"field": "rail", "op": "in", "value": ["lightning", "internal"]},
        {"field": "amount_msat", "op": "gte", "value": 10_000_000_000}]}},
    {"id": "drained_30d", "score": 15, "when": {"field": "velocity.sum.30d", "op": "gt",
                                                "ref": "agg.in.sum.30d"}},
    {"id": "exchange_hop", "score": 5, "when": {"field": "destination_labels",
                                                "op": "contains", "value": "exchange"}},
    {"id": "quiet_then_busy", "score": 25, "when": {"all": [
        {"field": "agg.out.count.30d", "op": "lt", "value": 3},
        {"field": "velocity.count.1h", "op": "gte", "value": 3}]}},
]


EQUITY = 10**9  # the one account every seeded deposit comes from


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")


async def prepare_pg(url: str, name: str, reuse: bool) -> tuple[str, bool]:
    """The benchmark's database URL, and whether it is seeded already (``reuse``)."""
    import asyncpg
    u = make_url(url)
    admin = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                  password=u.password, database="postgres")
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not (reuse and exists):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return str(u.set(database=name).render_as_string(hide_password=False)), bool(reuse and exists)


def _wallet_rows(rows: dict[str, list[dict[str, Any]]], rng: random.Random, now: Any,
                 history: int, old: int, owner: tuple[str, str], wid: str, aid: int,
                 tag: str) -> Event:
    """One wallet's rows (its ledger account, the wallet, its withdrawals and credits) added
    to ``rows``; the event to screen for it."""
    owner_type, owner_id = owner
    rows["accts"].append({"id": aid, "name": f"{owner_type}:{wid}", "asset": "BTC",
                          "kind": "customer_wallet", "owner_type": owner_type,
                          "owner_id": owner_id, "debits_must_not_exceed_credits": True,
                          "credits_must_not_exceed_debits": False, "debits_posted": 0,
                          "credits_posted": 0, "debits_pending": 0, "credits_pending": 0,
                          "created_at": now})
    rows["wallets"].append({"id": wid, "owner_type": owner_type, "owner_id": owner_id,
                            "asset": "BTC", "ledger_account_id": aid, "created_at": now})
    base = rng.randint(10_000, 500_000) * 1000
    for j in range(history + old):  # ``old`` of them before the 30-day window
        at = now - timedelta(minutes=rng.randint(1, 30 * 24 * 60)) if j < history \
            else now - timedelta(days=31, minutes=rng.randint(0, 330 * 24 * 60))
        rows["wds"].append({"id": f"wd_{tag}_{j}", "wallet_id": wid,
                            "method": WithdrawalMethod.LIGHTNING, "destination": f"dest{j % 7}",
                            "script_pubkey": None,
                            "amount_msat": base + rng.randint(0, base // 5),
                            "fee_reserve_msat": 0, "fee_msat": None,
                            "status": WithdrawalStatus.CONFIRMED, "batch_id": None, "txid": None,
                            "hold_id": f"wd:{tag}:{j}", "store_id": None, "invoice_id": None,
                            "created_at": at, "updated_at": at})
    for j in range((history + old) // 2):
        at = now - timedelta(minutes=rng.randint(1, 30 * 24 * 60)) if j < history // 2 \
            else now - timedelta(days=31, minutes=rng.randint(0, 330 * 24 * 60))
        rows["credits"].append({"id": f"dep:{tag}:{j}", "debit_account_id": EQUITY,
                                "credit_account_id": aid, "amount": base * 2, "asset": "BTC",
                                "kind": "single", "pending_id": None, "state": None,
                                "timeout_seconds": 0, "expires_at": None, "linked": False,
                                "code": "deposit", "ref": "", "created_at": at,
                                **{f"{p}_{c}": 0 for p in ("dr", "cr") for c in (
                                    "debits_posted", "credits_posted", "debits_pending",
                                    "credits_pending")}})
    return Event(wallet_id=wid, ledger_account_id=aid, owner_type=owner_type,
                 owner_id=owner_id, amount_msat=base, direction="out",
                 rail=rng.choice(["onchain", "lightning", "internal"]),
                 destination=f"dest{rng.randint(0, 9)}", counterparty=f"dest{rng.randint(0, 9)}")


async def seed(sessions: Any, accounts: int, history: int, *, write: bool = True,
               old: int = 0, merchants: int = 0) -> list[Event]:
    """Seed the accounts and their history; the events to screen (the same ones, from the
    same seed, when ``write`` is false: a database seeded by an earlier run). With
    ``merchants``, every other user owns that many merchants, each with a wallet and a
    history of its own (their events are screened too)."""
    now = utcnow()
    rng = random.Random(7)
    events = []
    batch = 1000
    if write:
        async with sessions() as s, s.begin():
            await s.execute(insert(LedgerAccount).values(
                id=EQUITY, name="bench:equity", asset="BTC", kind="equity", owner_type=None,
                owner_id=None, debits_must_not_exceed_credits=False,
                credits_must_not_exceed_debits=False, debits_posted=0, credits_posted=0,
                debits_pending=0, credits_pending=0, created_at=now))
    for start in range(0, accounts, batch):
        rows: dict[str, list[dict[str, Any]]] = {
            k: [] for k in ("users", "shops", "accts", "wallets", "wds", "credits")}
        for i in range(start, min(accounts, start + batch)):
            uid = f"usr_b{i:08d}"
            rows["users"].append({"id": uid, "email": f"b{i}@bench.example",
                                  "display_name": "", "password_hash": None,
                                  "is_admin": False, "kyc_tier": i % 3, "status": "active",
                                  "created_at": now})
            events.append(_wallet_rows(rows, rng, now, history, old, ("user", uid),
                                       f"wal_b{i:08d}", i + 1, f"b{i:08d}"))
            for k in range(merchants if i % 2 == 0 else 0):
                mid = f"mer_b{i:08d}_{k}"
                rows["shops"].append({"id": mid, "name": f"shop {i} {k}", "owner_user_id": uid,
                                      "created_at": now})
                events.append(_wallet_rows(rows, rng, now, history, old, ("merchant", mid),
                                           f"wal_m{i:08d}_{k}",
                                           accounts + 1 + i * merchants + k, f"m{i:08d}_{k}"))
        if not write:
            continue
        async with sessions() as s, s.begin():
            await s.execute(insert(User), rows["users"])
            if rows["shops"]:
                await s.execute(insert(Merchant), rows["shops"])
            await s.execute(insert(LedgerAccount), rows["accts"])
            await s.execute(insert(Wallet), rows["wallets"])
            await s.execute(insert(Withdrawal), rows["wds"])
            await s.execute(insert(LedgerTransfer), rows["credits"])
        log(f"seeded {min(accounts, start + batch)} accounts")
    return events


async def database(args: argparse.Namespace) -> tuple[str, bool]:
    if args.sqlite:
        path = args.sqlite_path or f"{tempfile.mkdtemp()}/risk_bench.db"
        args.sqlite_path = path
        return f"sqlite+aiosqlite:///{path}", args.reuse and os.path.exists(path)
    base = os.environ.get("SATVAULT_TEST_POSTGRES_URL")
    if not base:
        raise SystemExit("set SATVAULT_TEST_POSTGRES_URL, or pass --sqlite")
    return await prepare_pg(base, args.database, args.reuse)


async def setup(args: argparse.Namespace) -> str:
    """Create (or reuse), migrate and seed the database; make the 20-rule set live."""
    url, seeded = await database(args)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url, pool_size=4)
    sessions = session_factory(engine)
    try:
        await seed(sessions, args.accounts, args.history, write=not seeded,
                   old=args.old_history, merchants=args.merchants)
        if not seeded and url.startswith("postgresql"):
            # Every wallet's credits folded into its roll-ups, as its deposits' screenings
            # would have (the shipped band): other wallets of a person are read, not folded.
            async with sessions() as s:
                accounts = (await s.execute(text(
                    "SELECT ledger_account_id FROM wallets ORDER BY 1"))).scalars().all()
            for start in range(0, len(accounts), 1000):  # a lock each: a thousand at a time
                async with sessions() as s, s.begin():
                    await s.execute(text("SELECT risk_in_fold(a, 900000000, 1000000000) "
                                         "FROM unnest(CAST(:a AS bigint[])) AS a"),
                                    {"a": list(accounts[start:start + 1000])})
        async with sessions() as s, s.begin():
            await s.execute(text("ANALYZE"))  # planner statistics for the seeded rows
        if not seeded:
            shipped = risk.default_rule_set_json()
            if args.wallet_rules:  # the shipped rules on the wallet's windows (before 0067)
                shipped = shipped.replace('"person.', '"')
            doc = json.loads(shipped)
            doc["rules"] += EXTRA_RULES
            assert len(doc["rules"]) == 20
            async with sessions() as s, s.begin():
                rs = await risk.propose_rule_set(s, rules=doc, actor="bench:a")
                await risk.approve_rule_set(s, version=rs.version, actor="bench:b")
    finally:
        await engine.dispose()
    return url


async def measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """Screenings on random accounts, each in its own transaction, begun before the clock
    starts (the BEGIN belongs to the payment's unit of work, not to the screening)."""
    engine = create_engine(url, pool_size=4)
    sessions = session_factory(engine)
    try:
        events = await seed(sessions, args.accounts, args.history, write=False,
                            old=args.old_history, merchants=args.merchants)
        count = [0]

        def before(*_a: Any) -> None:
            count[0] += 1
        event.listen(engine.sync_engine, "before_cursor_execute", before)
        # The seed's throwaway rows (1.35 million dicts built above) out of the collector's
        # reach: else a full collection over them lands in the timing (~55 ms, once or twice
        # per round), a cost of this benchmark's heap, not of a screening.
        gc.collect()
        gc.freeze()
        rng = random.Random(11)
        times, cpus, statements = [], [], []
        outcomes: dict[str, int] = {}
        server: list[float] = []
        for n in range(args.warmup + args.evaluations):
            if n == args.warmup:
                server.append(await _server_cpu(sessions))
            ev = rng.choice(events)
            async with sessions() as s, s.begin():
                # BEGIN now, not in the timing: SQLite's BEGIN IMMEDIATE comes with the
                # connection; asyncpg sends its BEGIN with the first statement, so one is sent.
                await (await s.connection()).exec_driver_sql("SELECT 1")
                count[0] = 0
                c0, t0 = time.process_time(), time.perf_counter()
                sc = await risk.screen(s, ev)
                dt = time.perf_counter() - t0
                dc = time.process_time() - c0
                used = count[0]
            if n >= args.warmup:
                times.append(dt * 1000)
                cpus.append(dc * 1000)
                statements.append(used)
                outcomes[sc.outcome.value] = outcomes.get(sc.outcome.value, 0) + 1
        server.append(await _server_cpu(sessions))
        times.sort()
        db_ms = None if server[0] is None or server[1] is None \
            else round((server[1] - server[0]) * 1000 / args.evaluations, 3)
        return {"median_ms": round(statistics.median(times), 3),
                "db_cpu_ms": db_ms,
                "p99_ms": round(times[int(len(times) * 0.99) - 1], 3),
                "max_ms": round(times[-1], 3), "statements": max(statements),
                "cpu_ms": round(statistics.fmean(cpus), 3),
                "load_average": os.getloadavg()[0], "outcomes": outcomes,
                "source": os.path.dirname(os.path.dirname(risk.__file__))}
    finally:
        await engine.dispose()


async def _server_cpu(sessions: Any) -> Any:
    """PostgreSQL: the user + system CPU seconds so far of every server backend connected
    to the benchmark's database (the server runs on this machine: /proc); None on SQLite,
    whose engine runs in this process (its CPU is in ``cpu_ms``)."""
    async with sessions() as s:
        if s.get_bind().dialect.name != "postgresql":
            return None
        pids = (await s.execute(text("SELECT pid FROM pg_stat_activity "
                                     "WHERE datname = current_database()"))).scalars().all()
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _worker(args: argparse.Namespace, url: str, src: str) -> dict[str, Any]:
    """One measurement in a fresh interpreter that imports satvault from ``src``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", url,
           "--accounts", str(args.accounts), "--history", str(args.history),
           "--old-history", str(args.old_history), "--merchants", str(args.merchants),
           "--evaluations", str(args.evaluations),
           "--warmup", str(args.warmup)]
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _migrate_to(url: str, revision: str) -> None:
    """Upgrade or downgrade the benchmark's database to ``revision`` (``--migration-ab``)."""
    from alembic import command

    from satvault.migrate import alembic_config

    if revision == "head":
        upgrade(url)
    else:
        command.downgrade(alembic_config(url), revision)


async def _index(url: str, present: bool) -> None:
    """Drop or recreate migration 0021's index, to measure without and with it."""
    engine = create_engine(url)
    pg = engine.dialect.name == "postgresql"
    cols = "credit_account_id, created_at) INCLUDE (amount, kind" if pg \
        else "credit_account_id, created_at, kind, amount"
    try:
        async with engine.begin() as c:
            await c.execute(text("DROP INDEX IF EXISTS ix_ledger_transfers_credit_window"))
            if present:
                await c.execute(text("CREATE INDEX ix_ledger_transfers_credit_window ON "
                                     f"ledger_transfers ({cols})"))
            await c.execute(text("ANALYZE ledger_transfers"))
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = await setup(args)
    head = {"benchmark": "risk.screen", "rules": 20, "accounts": args.accounts,
            "withdrawals": args.accounts * (args.history + args.old_history),
            "deposits": args.accounts * ((args.history + args.old_history) // 2),
            "in_window": {"withdrawals": args.history, "deposits": args.history // 2},
            "merchants_per_other_user": args.merchants, "evaluations": args.evaluations}
    if args.seed_only:
        return {**head, "seeded": url.rsplit("/", 1)[-1]}
    # NAME=SRC, or NAME=SRC@REVISION: that variant measured with the database at REVISION
    # (its tree's functions), the database brought back to head at the end.
    variants = [[name, *src.partition("@")[::2]]
                for name, src in (v.split("=", 1) for v in args.variant)] or [
        ["this tree", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"), ""]]
    phases = [("no index", False), ("index", True)] if args.index_phases else [("as is", None)]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if args.migration_ab:
        # The database's functions at two revisions, alternating per round (downgrading
        # to the earlier one and upgrading back: one seeded database for both).
        revisions = [(f"at {args.migration_ab}", args.migration_ab), ("at head", "head")]
        for r in range(args.repeat):
            for phase, revision in (revisions if r % 2 == 0 else revisions[::-1]):
                await asyncio.to_thread(_migrate_to, url, revision)
                for name, src, _rev in variants:
                    res = _worker(args, url, src)
                    log(f"{phase} / {name} / round {r + 1}: {res}")
                    results.setdefault(phase, {}).setdefault(name, []).append(res)
        await asyncio.to_thread(_migrate_to, url, "head")
        phases = []
    for phase, present in phases:
        if present is not None:
            await _index(url, present)
        for r in range(args.repeat):
            order = variants if r % 2 == 0 else variants[::-1]
            for name, src, rev in order:
                if rev:
                    await asyncio.to_thread(_migrate_to, url, rev)
                res = _worker(args, url, src)
                if rev:
                    await asyncio.to_thread(_migrate_to, url, "head")
                log(f"{phase} / {name} / round {r + 1}: {res}")
                results.setdefault(phase, {}).setdefault(name, []).append(res)
    table = {}
    for phase, by_name in results.items():
        for name, runs in by_name.items():
            table[f"{phase} | {name}"] = {
                k: round(statistics.median(x[k] for x in runs), 3)
                for k in ("median_ms", "p99_ms", "cpu_ms", "statements")} | {
                "db_cpu_ms": None if any(x.get("db_cpu_ms") is None for x in runs)
                else round(statistics.median(x["db_cpu_ms"] for x in runs), 3),
                "rounds": [{k: x.get(k) for k in ("median_ms", "p99_ms", "cpu_ms", "db_cpu_ms")}
                           for x in runs],
                "load_average": [x["load_average"] for x in runs]}
    return {**head, "db": "postgresql" if url.startswith("postgresql") else "sqlite",
            "repeat": args.repeat, "results": table}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sqlite", action="store_true")
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--history", type=int, default=30)
    p.add_argument("--evaluations", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--old-history", type=int, default=60, help="withdrawals per account "
                   "older than the 30-day window, 31-360 days back (60; half as many deposits)")
    p.add_argument("--merchants", type=int, default=0, help="merchants (a wallet and a "
                   "history each) owned by every other user: persons of several wallets")
    p.add_argument("--wallet-rules", action="store_true", help="the shipped rules naming "
                   "the wallet's windows, not the person's (a tree before migration 0067 "
                   "can read them)")
    p.add_argument("--database", default="risk_bench", help="PostgreSQL: the database to "
                   "(re)create on the server of SATVAULT_TEST_POSTGRES_URL")
    p.add_argument("--sqlite-path", default=None, help="SQLite: the file (default: a "
                   "temporary one)")
    p.add_argument("--reuse", action="store_true", help="keep a database seeded by an "
                   "earlier run with the same --accounts, --history and --old-history")
    p.add_argument("--seed-only", action="store_true")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=SRC",
                   help="measure the satvault package in SRC (e.g. an extracted `git archive "
                   "<commit> src`) under NAME; repeatable, the order alternates per round; "
                   "NAME=SRC@REVISION measures it with the database at REVISION")
    p.add_argument("--repeat", type=int, default=1, help="rounds (medians over them)")
    p.add_argument("--migration-ab", metavar="REVISION", default="", help="measure with "
                   "the database at REVISION and at head, alternating per round (the "
                   "functions a migration replaced, side by side on one seeded database)")
    p.add_argument("--index-phases", action="store_true", help="measure every variant "
                   "without, then with, migration 0021's ledger window index")
    p.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(measure(args, args.worker))))
        return
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
