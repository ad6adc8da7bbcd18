"""Rules-engine benchmark: one screening (the wallet's row lock with the live rule-set
version, the one feature query, 20 rules evaluated) at 10,000 accounts with a month of
history each, timed from the call to the verdict.

    SATVAULT_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/risk.py            # PostgreSQL (a fresh risk_bench db)
    .venv/bin/python benchmarks/risk.py --sqlite       # SQLite, in a temporary file

Options: ``--accounts`` (10000), ``--history`` (withdrawals per account in the last 30 days,
30; half as many deposits), ``--evaluations`` (3000, after 300 to warm up). Each evaluation
runs in its own transaction on a random account, as a withdrawal's would. Progress goes to
stderr; the last line of stdout is one JSON object: median and p99 in milliseconds, the SQL
statements per evaluation, this process's CPU per evaluation (``client_cpu_ms``: SQLAlchemy,
the driver, the features and the rules), the machine's load average, the rules, accounts
and rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.engine import make_url

from satvault.accounts.models import User, Wallet
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


async def prepare_pg(url: str) -> str:
    import asyncpg
    u = make_url(url)
    admin = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                  password=u.password, database="postgres")
    try:
        await admin.execute("DROP DATABASE IF EXISTS risk_bench WITH (FORCE)")
        await admin.execute("CREATE DATABASE risk_bench")
    finally:
        await admin.close()
    return str(u.set(database="risk_bench").render_as_string(hide_password=False))


async def seed(sessions: Any, accounts: int, history: int) -> list[Event]:
    now = utcnow()
    rng = random.Random(7)
    events = []
    batch = 1000
    async with sessions() as s, s.begin():
        await s.execute(insert(LedgerAccount).values(
            id=EQUITY, name="bench:equity", asset="BTC", kind="equity", owner_type=None,
            owner_id=None, debits_must_not_exceed_credits=False,
            credits_must_not_exceed_debits=False, debits_posted=0, credits_posted=0,
            debits_pending=0, credits_pending=0, created_at=now))
    for start in range(0, accounts, batch):
        users, accts, wallets, wds, credits = [], [], [], [], []
        for i in range(start, min(accounts, start + batch)):
            uid, wid, aid = f"usr_b{i:08d}", f"wal_b{i:08d}", i + 1
            users.append({"id": uid, "email": f"b{i}@bench.example", "display_name": "",
                          "password_hash": None, "is_admin": False, "kyc_tier": i % 3,
                          "status": "active", "created_at": now})
            accts.append({"id": aid, "name": f"user:{wid}", "asset": "BTC",
                          "kind": "customer_wallet", "owner_type": "user", "owner_id": uid,
                          "debits_must_not_exceed_credits": True,
                          "credits_must_not_exceed_debits": False, "debits_posted": 0,
                          "credits_posted": 0, "debits_pending": 0, "credits_pending": 0,
                          "created_at": now})
            wallets.append({"id": wid, "owner_type": "user", "owner_id": uid, "asset": "BTC",
                            "ledger_account_id": aid, "created_at": now})
            base = rng.randint(10_000, 500_000) * 1000
            for j in range(history):
                at = now - timedelta(minutes=rng.randint(1, 30 * 24 * 60))
                wds.append({"id": f"wd_b{i:08d}_{j}", "wallet_id": wid,
                            "method": WithdrawalMethod.LIGHTNING, "destination": f"dest{j % 7}",
                            "script_pubkey": None,
                            "amount_msat": base + rng.randint(0, base // 5),
                            "fee_reserve_msat": 0, "fee_msat": None,
                            "status": WithdrawalStatus.CONFIRMED, "batch_id": None, "txid": None,
                            "hold_id": f"wd:b{i}:{j}", "store_id": None, "invoice_id": None,
                            "created_at": at, "updated_at": at})
            for j in range(history // 2):
                at = now - timedelta(minutes=rng.randint(1, 30 * 24 * 60))
                credits.append({"id": f"dep:b{i}:{j}", "debit_account_id": EQUITY,
                                "credit_account_id": aid, "amount": base * 2, "asset": "BTC",
                                "kind": "single", "pending_id": None, "state": None,
                                "timeout_seconds": 0, "expires_at": None, "linked": False,
                                "code": "deposit", "ref": "", "created_at": at,
                                **{f"{p}_{c}": 0 for p in ("dr", "cr") for c in (
                                    "debits_posted", "credits_posted", "debits_pending",
                                    "credits_pending")}})
            events.append(Event(wallet_id=wid, ledger_account_id=aid, owner_type="user",
                                owner_id=uid, amount_msat=base, direction="out",
                                rail=rng.choice(["onchain", "lightning", "internal"]),
                                destination=f"dest{rng.randint(0, 9)}",
                                counterparty=f"dest{rng.randint(0, 9)}"))
        async with sessions() as s, s.begin():
            await s.execute(insert(User), users)
            await s.execute(insert(LedgerAccount), accts)
            await s.execute(insert(Wallet), wallets)
            await s.execute(insert(Withdrawal), wds)
            await s.execute(insert(LedgerTransfer), credits)
        log(f"seeded {min(accounts, start + batch)} accounts")
    return events


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.sqlite:
        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/risk_bench.db"
    else:
        base = os.environ.get("SATVAULT_TEST_POSTGRES_URL")
        if not base:
            raise SystemExit("set SATVAULT_TEST_POSTGRES_URL, or pass --sqlite")
        url = await prepare_pg(base)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url, pool_size=4)
    sessions = session_factory(engine)
    try:
        events = await seed(sessions, args.accounts, args.history)
        async with sessions() as s, s.begin():
            await s.execute(text("ANALYZE"))  # planner statistics for the seeded rows
        doc = json.loads(risk.default_rule_set_json())
        doc["rules"] += EXTRA_RULES
        async with sessions() as s, s.begin():
            rs = await risk.propose_rule_set(s, rules=doc, actor="bench:a")
            await risk.approve_rule_set(s, version=rs.version, actor="bench:b")
        assert len(doc["rules"]) == 20
        statements: list[int] = []
        count = [0]

        def before(*_a: Any) -> None:
            count[0] += 1
        event.listen(engine.sync_engine, "before_cursor_execute", before)
        rng = random.Random(11)
        times = []
        cpu = 0.0
        outcomes: dict[str, int] = {}
        for n in range(args.warmup + args.evaluations):
            ev = rng.choice(events)
            async with sessions() as s, s.begin():
                count[0] = 0
                c0, t0 = time.process_time(), time.perf_counter()
                sc = await risk.screen(s, ev)
                dt = time.perf_counter() - t0
                dc = time.process_time() - c0
                used = count[0]
            if n >= args.warmup:
                times.append(dt * 1000)
                cpu += dc * 1000
                statements.append(used)
                outcomes[sc.outcome.value] = outcomes.get(sc.outcome.value, 0) + 1
        event.remove(engine.sync_engine, "before_cursor_execute", before)
        times.sort()
        return {"benchmark": "risk.screen", "db": engine.dialect.name,
                "rules": len(doc["rules"]), "accounts": args.accounts,
                "withdrawals": args.accounts * args.history,
                "deposits": args.accounts * (args.history // 2),
                "evaluations": len(times), "median_ms": round(statistics.median(times), 3),
                "p99_ms": round(times[int(len(times) * 0.99) - 1], 3),
                "max_ms": round(times[-1], 3), "statements": max(statements),
                "client_cpu_ms": round(cpu / len(times), 3),
                "load_average": os.getloadavg()[0],
                "outcomes": outcomes}
    finally:
        await engine.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sqlite", action="store_true")
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--history", type=int, default=30)
    p.add_argument("--evaluations", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=300)
    print(json.dumps(asyncio.run(run(p.parse_args()))))


if __name__ == "__main__":
    main()
