"""Concurrent withdrawals of one wallet that together cross a velocity rule: each is
screened after the ones before it (the wallet's row lock on PostgreSQL, SQLite's one writer),
so exactly the allowed number gets through however many race."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from satvault.payouts.models import Withdrawal
from satvault.risk import RiskRejected
from satvault.risk.models import RiskCase, RiskDecision
from satvault.withdrawals.service import PreparedDestination, withdraw
from tests.chainenv import Env
from tests.lightning.test_lightning import fund
from tests.risk.test_withdrawals import DEST, make_live

SAT = 1000


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"withdrawal_daily_limit_msat": 10**15}


async def test_racing_withdrawals_cross_a_velocity_rule_exactly(env: Env):
    postgres = env.sessions.kw["bind"].dialect.name == "postgresql"
    racers, allowed = (200, 50) if postgres else (40, 10)
    await make_live(env, {"thresholds": {"review": 50, "reject": 100}, "rules": [
        {"id": "velocity_count_1h", "score": 100, "when": {"all": [
            {"field": "direction", "op": "eq", "value": "out"},
            {"field": "velocity.count.1h", "op": "gt", "value": allowed}]}}]})
    await fund(env, env.wallet, 10_000_000 * SAT)
    prepared = PreparedDestination("onchain", DEST, None, 1_000 * SAT)
    wallet = env.wallet

    async def wallet_for(_s):
        return wallet

    async def one() -> str:
        try:
            async with env.sessions() as s, s.begin():
                await withdraw(s, settings=env.settings, lightning=None,
                               wallet_for=wallet_for, prepared=prepared)
            return "approve"
        except RiskRejected as exc:  # what the web edge does after the rollback
            async with env.sessions() as s, s.begin():
                await exc.record_after_rollback(s)
            return "reject"

    results = await asyncio.gather(*(one() for _ in range(racers)))
    assert results.count("approve") == allowed
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Withdrawal))
                ).scalar_one() == allowed
        outcomes = dict((await s.execute(select(RiskDecision.outcome, func.count()).group_by(
            RiskDecision.outcome))).all())
        assert outcomes == {"approve": allowed, "reject": racers - allowed}
        assert (await s.execute(select(func.count()).select_from(RiskCase))
                ).scalar_one() == racers - allowed
        # Each approved one saw every one before it: velocity counts 1 .. allowed.
        seen = sorted(int(f.split('"velocity.count.1h": ')[1].split(",")[0]) for f in (
            await s.execute(select(RiskDecision.features).where(
                RiskDecision.outcome == "approve"))).scalars())
        assert seen == list(range(1, allowed + 1))
    await env.check()
