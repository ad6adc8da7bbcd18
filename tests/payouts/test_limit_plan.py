"""The internal payment's guarded withdrawal INSERT (the daily and KYC limits checked in its
statement, the risk decision written in its ``WITH``) is planned once per connection, not on
every payment (migration 0042): from the sixth execution on one connection PostgreSQL runs
it on its generic plan. Before 0042 every execution was planned again (the function it reads
the limits' sums from was estimated at 1,000 rows, which made the generic plan look dearer)."""

from __future__ import annotations

from sqlalchemy import text

from satvault.accounts import service as acc
from satvault.composition import open_sessions
from satvault.config import Settings
from satvault.db import create_engine, utcnow
from satvault.kernel.ids import new_id
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.payouts.service import insert_within_daily_limit
from satvault.risk import service as risk
from satvault.risk.features import Event

PAYMENTS = 8


async def test_the_guarded_withdrawal_insert_runs_on_one_plan(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=1)  # one connection: its prepared statements
    sessions = open_sessions(engine)
    settings = Settings(database_url=pg_url, network="regtest")
    try:
        async with sessions() as s, s.begin():
            user = await acc.create_user(s, email="plans@example.com")
            wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
        for n in range(PAYMENTS):  # each as the API writes one: screened, then the INSERT
            async with sessions() as s, s.begin():
                screening = await risk.screen(s, Event(
                    wallet_id=wallet.id, ledger_account_id=wallet.ledger_account_id,
                    owner_type=wallet.owner_type, owner_id=wallet.owner_id,
                    amount_msat=1000, direction="out", rail="internal",
                    destination=f"lnbcrt-payment-{n}", counterparty="wallet:wal_payee"))
                wid, now = new_id("wd"), utcnow()
                await insert_within_daily_limit(s, Withdrawal(
                    id=wid, wallet_id=wallet.id, method=WithdrawalMethod.INTERNAL,
                    destination=f"lnbcrt-payment-{n}", script_pubkey=None, amount_msat=1000,
                    fee_reserve_msat=0, fee_msat=0, status=WithdrawalStatus.CONFIRMED,
                    batch_id=None, txid=None, hold_id=f"wd:{wid}:internal", invoice_id=None,
                    created_at=now, updated_at=now, store_id=None),
                    wallet=wallet, settings=settings,
                    also=risk.decision_insert(screening, subject_type="withdrawal",
                                              subject_id=wid))
        async with sessions() as s:
            written = (await s.execute(text(
                "SELECT count(*) FROM withdrawals w JOIN risk_decisions d "
                "ON d.subject_id = w.id WHERE w.wallet_id = :w"), {"w": wallet.id})).scalar_one()
            plans = (await s.execute(text(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE 'WITH also_written AS%INSERT INTO withdrawals%'"))).all()
        assert written == PAYMENTS
        assert len(plans) == 1, plans  # one statement, prepared once on the connection
        generic, custom = plans[0]
        assert custom == 5 and generic == PAYMENTS - 5, plans
    finally:
        await engine.dispose()
