"""The risk rules' velocity windows count a withdrawal held for approvers or for review
from its release too, as the limits do (migration 0050). Found from outside: they counted it
from its request only, so one released a day after it was asked for was outside every 24-hour
window at the next screening although its money had just left: the payer moved twice a
velocity rule's sum within 24 hours unchallenged. A held one counts while it waits, too."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from satvault.db import utcnow
from satvault.kernel.clock import FakeClock
from satvault.payouts.models import WithdrawalStatus
from satvault.risk.errors import RiskRejected
from satvault.risk.models import RiskDecision
from satvault.risk.rules import Params
from tests.chainenv import Env
from tests.payouts.test_payouts import SAT, external_address, fund
from tests.policy.support import make_live, people, request
from tests.policy.test_approvals import TWO_OF_TREASURY, approve, status_of
from tests.risk.conftest import Ctx
from tests.risk.test_screening_path import _function_matches_query
from tests.risk.test_withdrawals import make_live as make_rules_live

HELD = 100_000  # sat: needs two approvals (the policy's threshold is 50,000)
SMALL = 40_000  # sat: needs none
CEILING = 120_000  # sat: the velocity rule's 24-hour sum

RULES = {"thresholds": {"review": 50, "reject": 100}, "rules": [
    {"id": "velocity_sum_24h", "score": 100, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "out"},
        {"field": "velocity.sum.24h", "op": "gt", "value": CEILING * SAT}]}}]}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"withdrawal_approval_ttl_seconds": 4 * 86400}


async def last_features(env: Env) -> dict:
    async with env.sessions() as s:
        row = (await s.execute(select(RiskDecision).order_by(RiskDecision.at.desc())
                               .limit(1))).scalar_one()
    return dict(json.loads(row.features))


async def test_a_held_withdrawal_released_late_counts_in_the_velocity_windows(
        env: Env, clock: FakeClock):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, TWO_OF_TREASURY)
    await make_rules_live(env, RULES)  # type: ignore[arg-type]
    await fund(env, 1_000_000)
    held = await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                         HELD, initiator=alice)
    assert held.status == WithdrawalStatus.AWAITING_APPROVAL

    # Waiting for approvers, it counts: 100,000 + 40,000 is over the rule's 120,000.
    clock.advance(hours=1)
    with pytest.raises(RiskRejected):
        await request(env.sessions, env.settings, env.wallet, external_address(env, 2),
                      SMALL, initiator=alice)

    # Released a day after it was asked for: its money leaves now, so it counts from now.
    clock.advance(hours=24)
    await approve(env, held.id, who.bob)
    assert (await approve(env, held.id, who.carol)).released
    assert await status_of(env, held.id) == WithdrawalStatus.PENDING
    clock.advance(minutes=5)
    with pytest.raises(RiskRejected) as refused:
        await request(env.sessions, env.settings, env.wallet, external_address(env, 3),
                      SMALL, initiator=alice)
    async with env.sessions() as s, s.begin():  # as the edge records a refusal
        await refused.value.record_after_rollback(s)
    f = await last_features(env)
    assert (f["agg.out.count.24h"], f["agg.out.sum.24h"], f["agg.out.counterparties.24h"]) \
        == (1, HELD * SAT, 1), f
    assert (f["agg.out.count.1h"], f["agg.out.counterparties.1h"]) == (1, 1), f
    assert f["velocity.sum.24h"] == (HELD + SMALL) * SAT

    # A day after its release it no longer counts.
    clock.advance(hours=24)
    wd = await request(env.sessions, env.settings, env.wallet, external_address(env, 4),
                       SMALL, initiator=alice)
    assert wd.status == WithdrawalStatus.PENDING
    f = await last_features(env)
    assert (f["agg.out.count.24h"], f["agg.out.counterparties.24h"]) == (0, 0), f
    assert (f["agg.out.count.7d"], f["agg.out.sum.7d"]) == (1, HELD * SAT), f
    await env.check()


async def test_postgresql_function_counts_released_withdrawals_as_the_query(ctx: Ctx):
    """Migration 0053: the function (roll-ups by request, plus the withdrawals released inside
    a window but asked for before it) reads what the row-by-row query reads, window edges,
    distinct destinations and the structuring band included."""
    if ctx.sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no stored functions and runs the query")
    await ctx.screen(ctx.event(SAT))  # the shipped rule set becomes live
    m = timedelta(minutes=1)
    await ctx.out(95_000 * SAT, ago=timedelta(days=3), destination="bc1qheld",
                  released_ago=10 * m)  # in the band, released in the last hour
    await ctx.out(4_000 * SAT, ago=timedelta(days=2), released_ago=timedelta(hours=23))
    await ctx.out(1_000 * SAT, ago=5 * m)  # the same destination, asked for since
    await ctx.out(7_000 * SAT, ago=timedelta(days=40), destination="bc1qold",
                  released_ago=timedelta(days=20))
    await ctx.out(2_000 * SAT, ago=timedelta(days=2), destination="bc1qwaiting",
                  status=WithdrawalStatus.AWAITING_APPROVAL)  # held, not released: counts
    await ctx.out(3_000 * SAT, ago=timedelta(days=2), destination="bc1qgone",
                  status=WithdrawalStatus.CANCELLED, released_ago=timedelta(hours=1))
    params = Params(structuring_threshold_msat=100_000 * SAT)
    now = utcnow()
    rows = [await _function_matches_query(ctx, ctx.event(SAT), params, now + shift)
            for shift in (timedelta(0), 50 * m + timedelta(seconds=30), timedelta(hours=1),
                          timedelta(hours=23, seconds=-20), timedelta(days=20, seconds=30))]
    first = rows[0]
    assert (first["out.count.1h"], first["out.counterparties.1h"]) == (2, 2)
    assert (first["out.count.24h"], first["out.counterparties.24h"]) == (3, 2)
    assert (first["out.count.30d"], first["out.counterparties.30d"]) == (5, 4)
    assert first["out.band"] == 1 and first["out.sum.1h"] == 96_000 * SAT
    assert rows[1]["out.count.1h"] == 1  # the released one's hour is over
