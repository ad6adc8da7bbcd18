"""A refill stays between the semi-cold wallet's floor and ceiling, and a failing custody step
never silences the others (found from outside, stop 42):

* a refill target below the floor made every refill pass raise (a refill of a negative
  amount), and the custody worker, which ran sweeps, refills and the on-block
  reconciliation in turn, then never reconciled: money could go missing without a word;
* a target above the ceiling raised refills past it, and sweeps planned while a refill waited
  for its cosigners kept filling semi-cold, which the refill then carried past its ceiling."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from satvault.config import Settings
from satvault.payouts.models import PayoutBatch
from satvault.reconcile.models import ReconciliationRun
from satvault.workers import custody_worker
from tests.chainenv import Env
from tests.custody.conftest import cold_descriptor
from tests.custody.test_refill import fund_cold
from tests.custody.test_sweeps import deposit, outputs_by_role, tiers


@pytest.mark.parametrize("target", [500_000, 0, 2_000_001, 10**12])
def test_a_refill_target_outside_the_floor_and_ceiling_is_refused(target, tmp_path):
    with pytest.raises(ValidationError, match=r"semicold_refill_to_sat .* is not between "
                                               r"semicold_floor_sat"):
        Settings(home=tmp_path, semicold_floor_sat=600_000, semicold_ceiling_sat=2_000_000,
                 semicold_refill_to_sat=target)


def test_an_unset_refill_target_moves_between_the_floor_and_ceiling(tmp_path):
    assert Settings(home=tmp_path).semicold_refill_to_sat == 50_000_000
    # Only the floor raised, or only the ceiling lowered: the default follows.
    assert Settings(home=tmp_path, semicold_floor_sat=60_000_000
                    ).semicold_refill_to_sat == 60_000_000
    assert Settings(home=tmp_path, semicold_floor_sat=0, semicold_ceiling_sat=300_000
                    ).semicold_refill_to_sat == 300_000
    # Given and inside: kept; at either end: kept.
    for target in (600_000, 1_000_000, 2_000_000):
        assert Settings(home=tmp_path, semicold_floor_sat=600_000,
                        semicold_ceiling_sat=2_000_000,
                        semicold_refill_to_sat=target).semicold_refill_to_sat == target


class Failing:
    """A planner whose step fails, as the refill planner did on a target below the floor."""

    def __init__(self) -> None:
        self.calls = 0

    async def step(self) -> None:
        self.calls += 1
        raise RuntimeError("the refill planner failed")


async def runs(env: Env) -> int:
    async with env.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(ReconciliationRun)))
                   .scalar_one())


async def test_a_failing_refill_pass_does_not_skip_the_reconciliation(env: Env):
    failing = Failing()
    worker = custody_worker(env.runtime.sweeps, failing, env.runtime.reconciler, 30)  # type: ignore[arg-type]
    before = await runs(env)
    with pytest.raises(RuntimeError, match="the refill planner failed"):
        await worker._tick()
    assert await runs(env) == before + 1  # reconciled all the same
    env.chain.mine(1)  # a new block: due again
    with pytest.raises(RuntimeError):
        await worker._tick()
    assert await runs(env) == before + 2 and failing.calls == 2


REFILL = {"cold_descriptor": cold_descriptor(2, 3), "semicold_floor_sat": 200_000,
          "semicold_ceiling_sat": 600_000, "semicold_refill_to_sat": 500_000}


@pytest.mark.parametrize("settings_overrides", [REFILL])
async def test_sweeps_planned_while_a_refill_waits_leave_room_for_it(env: Env):
    await fund_cold(env, 2_000_000)
    refill = await env.runtime.refills.step()
    assert refill.batch_id is not None and refill.amount_sat == 500_000  # semi-cold held 0
    # The cosigners take days; deposits arrive and are swept meanwhile.
    await deposit(env, 1_000_000)
    sweep = await env.runtime.sweeps.step()
    assert sweep.batch_id is not None
    # Semi-cold will hold the refill's 500,000: the sweep sends it only the ceiling's rest
    # (before: 400,000, its 40 %, as if semi-cold were empty: 900,000 against 600,000).
    assert sweep.to_semicold_sat == 100_000
    assert sweep.to_cold_sat == 1_000_000 - sweep.fee_sat - 100_000


@pytest.mark.parametrize("settings_overrides", [REFILL])
async def test_no_refill_is_raised_beside_a_sweep_that_fills_semicold(env: Env):
    await fund_cold(env, 2_000_000)
    await deposit(env, 1_000_000)
    sweep = await env.runtime.sweeps.step()  # planned, not yet confirmed nor booked
    assert sweep.batch_id is not None and sweep.to_semicold_sat >= 200_000
    assert (await tiers(env))["hot_wallet"] == 0  # the books: under the floor
    refill = await env.runtime.refills.step()
    # Before: a refill of 500,000 beside the sweep's 400,000 (900,000: past the ceiling).
    assert refill.batch_id is None and "not under its floor" in refill.reason
    # Once the sweep is booked, semi-cold holds what it brought, under the ceiling.
    assert (await env.runtime.payouts.advance()).broadcast == 1
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1
    async with env.sessions() as s:
        txid = (await s.get(PayoutBatch, sweep.batch_id)).txid  # type: ignore[union-attr]
    assert (await outputs_by_role(env, txid))["hot"] == sweep.to_semicold_sat
    assert (await tiers(env))["hot_wallet"] == sweep.to_semicold_sat <= 600_000
    assert (await env.runtime.refills.step()).batch_id is None
    await env.check()
