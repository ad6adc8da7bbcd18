"""What a busy payer's history costs the risk screening, migration by migration (0036: the
body of 0035; 0037: one grouped pass; 0039: roll-ups for money out; 0040: and for money in;
0041: every window read in the one statement; 0067: the person's windows too, with
``--person-history`` a second wallet of the payer's person to read).

Not a timed test: a measurement. On a throwaway PostgreSQL database it seeds one wallet with
``--history`` live withdrawals spread over the last ``--spread`` seconds, each to a
destination of its own (a BOLT11 string of ~300 characters, as an internal payment stores),
plus ``--old`` withdrawals 60-400 days back and other wallets' rows around them, and
``--credits`` ledger credits to its account spread over ``--credit-spread`` seconds (a busy
store's incoming payments; other accounts' credits around them), then calls
``risk_screen_features`` (the function every withdrawal's screening calls, under the
wallet's row lock) for that wallet, alternating the schema between the ``--variants`` round
by round (each reached by going down to the oldest and up again, so 0039's roll-ups are
built by its migration from the rows). It reports the server's execution time per call
(``EXPLAIN (ANALYZE)`` of the call, so the network and the client are not in it) and the
wall time of a plain call, medians of ``--calls`` per round, then medians over ``--repeat``
rounds; the withdrawal limits' sums (``usage_ms``: ``withdrawal_usage``, which every
withdrawal also runs under the lock); what one more withdrawal's INSERT costs the server
(``insert_ms``, with the triggers it fires); and a screening right after one more credit
(``credit_screen_ms``: since 0040 the screening folds that credit first). ``--rapid-minutes``
is the rule set's rapid-movement window (0041 reads it as a window of its own: 0040 reused
the 1-hour one when equal, and otherwise ran a function call planned on every screening).

    SATVAULT_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/risk_history.py --history 3000 --repeat 3

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid

import asyncpg
from alembic import command

from satvault.migrate import alembic_config

_CALL = ("risk_screen_features(true, 'w_busy', 1, 'u_none', false, $1, '02node', "
         "ARRAY[$1, '02node'], now() - interval '30 days', now() - interval '1 hour', "
         "now() - interval '24 hours', now() - interval '7 days', now() - interval '30 days', "
         "now() - interval '7 days', now() - $2 * interval '1 minute', 900000000, 1000000000)")

# The ledger's columns a credit row needs (written as rows only: no account behind them).
_CREDIT_COLUMNS = ("id, debit_account_id, credit_account_id, amount, asset, kind, "
                   "timeout_seconds, linked, code, ref, created_at, dr_debits_posted, "
                   "dr_credits_posted, dr_debits_pending, dr_credits_pending, "
                   "cr_debits_posted, cr_credits_posted, cr_debits_pending, cr_credits_pending")

_SEED = """
SET session_replication_role = replica;  -- rows only: no foreign keys, no triggers
INSERT INTO wallets (id, owner_type, owner_id, asset, ledger_account_id, created_at)
VALUES ('w_busy', 'user', 'u_none', 'BTC', 1, now());
INSERT INTO withdrawals (id, wallet_id, method, destination, amount_msat, fee_reserve_msat,
                         status, hold_id, created_at, updated_at)
SELECT 'wd_' || g, 'w_busy', 'internal', 'lnbcrt10u1p' || repeat(md5(g::text), 9),
       1000000 + g, 0, 'confirmed', 'h_' || g,
       now() - ({spread}::float8 * g / {history} || ' s')::interval, now()
  FROM generate_series(1, {history}) g;
INSERT INTO withdrawals (id, wallet_id, method, destination, amount_msat, fee_reserve_msat,
                         status, hold_id, created_at, updated_at)
SELECT 'wo_' || g, 'w_busy', 'internal', 'lnbcrt10u1p' || repeat(md5(g::text), 9),
       1000000, 0, 'confirmed', 'ho_' || g, now() - (60 + g % 340 || ' days')::interval, now()
  FROM generate_series(1, {old}) g;
INSERT INTO withdrawals (id, wallet_id, method, destination, amount_msat, fee_reserve_msat,
                         status, hold_id, created_at, updated_at)
SELECT 'wx_' || g, 'w_' || (g % 500), 'internal', 'lnbcrt10u1p' || repeat(md5(g::text), 9),
       1000000, 0, 'confirmed', 'hx_' || g, now() - (g || ' s')::interval, now()
  FROM generate_series(1, 50000) g;
INSERT INTO ledger_transfers ({columns})
SELECT 'c_' || g, 2, CASE WHEN g <= {credits} THEN 1 ELSE 3 + g % 500 END, 1000000 + g, 'BTC',
       'single', 0, false, 'pay', '',
       now() - ({credit_spread}::float8 * (g % greatest({credits}, 1)) / greatest({credits}, 1)
                || ' s')::interval, 0, 0, 0, 0, 0, 0, 0, 0
  FROM generate_series(1, {credits} + 50000) g
"""  # the wallet's row (no ledger account behind it): its lock is the function's first step

# ``--person-history``: the payer's user owns a merchant whose wallet has a history of its own
# (each withdrawal to a destination of its own, spread like the payer's, and as many credits),
# so the person's windows (0067) read a second wallet.
_PERSON_SEED = """
SET session_replication_role = replica;
INSERT INTO merchants (id, name, owner_user_id, created_at) VALUES ('m_busy', 'shop', 'u_none',
                                                                    now());
INSERT INTO wallets (id, owner_type, owner_id, asset, ledger_account_id, created_at)
VALUES ('w_shop', 'merchant', 'm_busy', 'BTC', 1001, now());
INSERT INTO withdrawals (id, wallet_id, method, destination, amount_msat, fee_reserve_msat,
                         status, hold_id, created_at, updated_at)
SELECT 'ws_' || g, 'w_shop', 'internal', 'lnbcrt10u1s' || repeat(md5(g::text), 9),
       1000000 + g, 0, 'confirmed', 'hs_' || g,
       now() - ({spread}::float8 * g / {history} || ' s')::interval, now()
  FROM generate_series(1, {history}) g;
INSERT INTO ledger_transfers ({columns})
SELECT 'cs_' || g, 2, 1001, 1000000 + g, 'BTC', 'single', 0, false, 'pay', '',
       now() - ({credit_spread}::float8 * g / {history} || ' s')::interval,
       0, 0, 0, 0, 0, 0, 0, 0
  FROM generate_series(1, {history}) g
"""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def _measure(dsn: str, calls: int, rapid: int) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        dest = "lnbcrt10u1pnew"
        for _ in range(10):  # the session's plan cache, as a long-lived pool connection has
            await conn.fetch(f"SELECT * FROM {_CALL}", dest, rapid)
        server, wall = [], []
        for _ in range(calls):
            plan = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM {_CALL}", dest, rapid)
            server.append(json.loads(plan)[0]["Execution Time"])
            t0 = time.perf_counter()
            await conn.fetch(f"SELECT * FROM {_CALL}", dest, rapid)
            wall.append((time.perf_counter() - t0) * 1000)
        usage = []  # the withdrawal limits' sums, under the same lock, for every withdrawal
        for _ in range(calls):
            plan = await conn.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM withdrawal_usage('w_busy', "
                "'internal', now() - interval '24 hours', now() - interval '30 days')")
            usage.append(json.loads(plan)[0]["Execution Time"])
        credited = []
        # The credits come from another session (rows only: no ledger account behind them);
        # changing session_replication_role on this one would discard its cached plans.
        feeder = await asyncpg.connect(dsn)
        await feeder.execute("SET session_replication_role = replica")
        for _ in range(calls):
            await feeder.execute(
                f"INSERT INTO ledger_transfers ({_CREDIT_COLUMNS}) VALUES ('cn_' || "
                "md5(random()::text), 2, 1, 1000, 'BTC', 'single', 0, false, 'pay', '', now(), "
                "0, 0, 0, 0, 0, 0, 0, 0)")
            plan = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM {_CALL}", dest, rapid)
            credited.append(json.loads(plan)[0]["Execution Time"])
        await feeder.close()
        inserts = []
        for i in range(calls):
            plan = await conn.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO withdrawals (id, wallet_id, method, "
                "destination, amount_msat, fee_reserve_msat, status, hold_id, created_at, "
                "updated_at) VALUES ($1, 'w_busy', 'internal', $2, 1000, 0, 'confirmed', $1, "
                "now(), now())", f"wn_{uuid.uuid4().hex}", f"lnbcrt1new{i}")
            inserts.append(json.loads(plan)[0]["Execution Time"])
        return {"server_ms": round(statistics.median(server), 3),
                "wall_ms": round(statistics.median(wall), 3),
                "usage_ms": round(statistics.median(usage), 3),
                "insert_ms": round(statistics.median(inserts), 3),
                "credit_screen_ms": round(statistics.median(credited), 3)}
    finally:
        await conn.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", default=os.environ.get("SATVAULT_TEST_POSTGRES_URL"))
    p.add_argument("--history", type=int, default=3000)
    p.add_argument("--old", type=int, default=3000)
    p.add_argument("--spread", type=float, default=3.0, help="seconds the history spans")
    p.add_argument("--credits", type=int, default=0)
    p.add_argument("--credit-spread", type=float, default=30 * 86400.0,
                   help="seconds the credits span")
    p.add_argument("--person-history", type=int, default=0, help="withdrawals (and credits) "
                   "of a merchant's wallet the payer's user owns (0: none, a person alone)")
    p.add_argument("--variants", type=lambda v: v.split(","), default=["0039", "0040"])
    p.add_argument("--calls", type=int, default=40)
    p.add_argument("--rapid-minutes", type=int, default=30,
                   help="the rapid-movement window (the shipped rule set's: 30; 60 is the hour "
                        "window, which 0040 reused)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    if not args.database_url:
        sys.exit("--database-url or SATVAULT_TEST_POSTGRES_URL is required")
    base = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    server, name = base.rsplit("/", 1)[0], f"risk_history_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{server}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn, url = f"{server}/{name}", f"{server}/{name}".replace("postgresql://",
                                                             "postgresql+asyncpg://")
    try:
        cfg = alembic_config(url)
        revisions = {"0036": "0036_approver_group_changes",
                     "0037": "0037_risk_features_history", "0039": "0039_risk_rollups",
                     "0040": "0040_risk_credit_rollups", "0041": "0041_risk_windows_inlined",
                     "0061": "0061_owner_limits", "0067": "0067_person_risk_windows"}
        variants = {v: revisions[v] for v in args.variants}
        oldest_name = min(variants)
        oldest = revisions[oldest_name]
        await asyncio.to_thread(command.upgrade, cfg, oldest)
        conn = await asyncpg.connect(dsn)
        await conn.execute(_SEED.format(history=int(args.history), old=int(args.old),
                                        spread=float(args.spread), credits=int(args.credits),
                                        credit_spread=float(args.credit_spread),
                                        columns=_CREDIT_COLUMNS))
        if args.person_history:
            await conn.execute(_PERSON_SEED.format(
                history=int(args.person_history), spread=float(args.spread),
                credit_spread=float(args.credit_spread), columns=_CREDIT_COLUMNS))
        if variants[oldest_name] >= "0061":
            # Written with triggers off: the roll-ups built from the rows, and the credits
            # folded (as each wallet's screenings would have), once for every variant.
            await conn.execute("SET session_replication_role = origin")
            for wallet, account in (("w_busy", 1), ("w_shop", 1001)):
                await conn.execute("SELECT risk_rollups_rebuild($1)", wallet)
                await conn.execute("SELECT risk_in_fold($1, 900000000, 1000000000)", account)
        await conn.execute("VACUUM ANALYZE withdrawals, ledger_transfers")
        await conn.close()
        _log(f"seeded: {args.history} withdrawals in {args.spread} s, {args.old} older, "
             f"{args.credits} credits in {args.credit_spread} s")
        rounds: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for r in range(args.repeat):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for v in order:
                await asyncio.to_thread(command.downgrade, cfg, oldest)
                await asyncio.to_thread(command.upgrade, cfg, variants[v])
                got = await _measure(dsn, args.calls, args.rapid_minutes)
                rounds[v].append(got)
                _log(f"round {r + 1} {v}: {got}")
        summary = {v: {k: statistics.median(x[k] for x in rs) for k in rs[0]}
                   for v, rs in rounds.items()}
        print(json.dumps({"args": vars(args) | {"database_url": None}, "summary": summary,
                          "rounds": rounds, "load": os.getloadavg()}))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
