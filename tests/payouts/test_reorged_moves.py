"""A move (payout, sweep, refill) booked as confirmed is watched until it is
``payout_final_confirmations`` deep: a reorg that takes it out of the chain has it broadcast
again from its stored bytes, and one whose input was spent elsewhere is shown to a person
once, the books untouched. A final move is not looked at again."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from satvault.ledger.models import LedgerTransfer
from satvault.onchain.models import ReviewItem
from satvault.payouts.models import PayoutBatch, PayoutTx, Withdrawal
from tests.chainenv import Env
from tests.payouts.test_payouts import (
    PAYOUTS,
    Crash,
    FlakyBroadcast,
    external_address,
    fund,
    received,
    withdraw,
)

SAT = 1000
CONFLICTS = select(func.count()).select_from(ReviewItem).where(
    ReviewItem.kind == "payout_reorged_conflict")


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"payout_final_confirmations": 3}


async def books(env: Env) -> tuple[dict[str, int], int]:
    """The user's balances and how many transfers the ledger holds."""
    async with env.sessions() as s:
        transfers = (await s.execute(select(func.count()).select_from(LedgerTransfer))).scalar()
    return await env.balances(), int(transfers or 0)


async def confirmed_payout(env: Env, dest: str, sat: int) -> PayoutBatch:
    """A withdrawal of ``sat`` paid, one block deep and booked."""
    wd = await withdraw(env, dest, sat)
    assert (await env.runtime.payouts.step()).broadcast == 1
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    async with env.sessions() as s:
        assert (await s.get(Withdrawal, wd.id)).status == "confirmed"  # type: ignore[union-attr]
        return (await s.execute(PAYOUTS)).scalar_one()


async def payout(env: Env) -> PayoutBatch:
    async with env.sessions() as s:
        return (await s.execute(PAYOUTS)).scalar_one()


async def test_a_payout_reorged_out_is_broadcast_again_and_booked_once(env: Env):
    await fund(env, 1_000_000)
    dest = external_address(env, 0)
    batch = await confirmed_payout(env, dest, 100_000)
    before = await books(env)
    env.chain.reorg(1, drop_txids=[batch.txid])  # out of the chain and out of the mempool
    await env.runtime.watcher.step()
    assert await env.runtime.backend.transaction(batch.txid) is None
    restarted = env.new_runtime()  # a restart between the reorg and the next pass
    try:
        report = await restarted.payouts.step()
        assert report.rebroadcast == 1 and report.confirmed == 0, report
        status = await env.runtime.backend.transaction(batch.txid)
        assert status is not None and status.confirmations == 0  # back in the mempool
        env.chain.mine(1)
        await restarted.watcher.step()
        await restarted.payouts.step()
    finally:
        await restarted.close()
    assert await received(env, dest) == 100_000
    assert await books(env) == before  # booked once, when it first confirmed
    again = await payout(env)
    assert (again.status, again.txid) == ("confirmed", batch.txid)
    assert again.confirmed_height == env.chain.height  # where it is now
    assert again.final_at is None  # one block deep; final at three
    await env.check()


async def test_a_rebroadcast_cut_short_by_a_crash_is_done_again_after_a_restart(env: Env):
    await fund(env, 1_000_000)
    dest = external_address(env, 1)
    batch = await confirmed_payout(env, dest, 120_000)
    before = await books(env)
    env.chain.reorg(1, drop_txids=[batch.txid])
    await env.runtime.watcher.step()
    env.runtime.payouts.backend = FlakyBroadcast(env.runtime.backend, mode="crash")
    with pytest.raises(Crash):  # the node took it, then the process died
        await env.runtime.payouts.step()
    env.chain.reorg(1, drop_txids=[batch.txid])  # and lost again before it was mined
    restarted = env.new_runtime()
    try:
        assert (await restarted.payouts.step()).rebroadcast == 1
        env.chain.mine(1)
        await restarted.watcher.step()
        await restarted.payouts.step()
    finally:
        await restarted.close()
    assert await received(env, dest) == 120_000
    assert await books(env) == before
    await env.check()


async def test_a_payout_whose_other_version_confirms_after_a_reorg_is_booked_to_it(env: Env):
    """The booked version (a fee bump) leaves the chain in a reorg and the first version,
    still in a peer's mempool, is mined in its place. Found from outside: the books kept the
    bump (its txid and fee, the customer charged the bump's fee) and a review item said
    "another transaction"; the hot wallet's books then differed from its coins by the fee
    difference, with no command to mend them. The payout is booked again to the version that
    paid it: the customer gets back the fee it was charged above what was paid, the
    withdrawal and the batch name that txid, nothing is told to a person, and a restart does
    nothing more."""
    from satvault.custody.status import custody_status
    from satvault.payouts.models import WithdrawalStatus

    await fund(env, 1_000_000)
    dest = external_address(env, 2)
    wd = await withdraw(env, dest, 100_000)
    await env.runtime.payouts.step()
    async with env.sessions() as s:
        first = (await s.execute(select(PayoutTx).join(PayoutBatch).where(
            PayoutBatch.kind == "payout"))).scalar_one()
    bumped = await env.runtime.payouts.bump_fee(first.batch_id, 5)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    async with env.sessions() as s:
        bump_fee = (await s.get(PayoutBatch, first.batch_id)).fee_sat  # type: ignore[union-attr]
        reserve = (await s.get(Withdrawal, wd.id)).fee_reserve_msat  # type: ignore[union-attr]
    assert bump_fee > first.fee_sat
    before = await env.balances()
    env.chain.reorg(1, drop_txids=[bumped])
    await env.runtime.backend.broadcast(first.raw_tx)  # a peer relays the first version
    env.chain.mine(1)
    await env.runtime.watcher.step()
    report = await env.runtime.payouts.step()
    assert (report.rebooked, report.reorged_conflicts, report.rebroadcast) == (1, 0, 0), report
    restarted = env.new_runtime()
    try:
        again = await restarted.payouts.step()
        assert (again.rebooked, again.reorged_conflicts) == (0, 0), again
        await restarted.watcher.step()
    finally:
        await restarted.close()
    async with env.sessions() as s:
        assert (await s.execute(CONFLICTS)).scalar() == 0
        paid = await s.get(Withdrawal, wd.id)
    batch = await payout(env)
    assert (batch.status, batch.txid, batch.fee_sat) == ("confirmed", first.txid, first.fee_sat)
    assert paid is not None and paid.status == WithdrawalStatus.CONFIRMED
    assert (paid.txid, paid.fee_msat) == (first.txid, first.fee_sat * 1000)
    charged = min(bump_fee, reserve // 1000) - min(first.fee_sat, reserve // 1000)
    assert charged > 0
    assert await env.balances() == {**before, "available": before["available"] + charged * SAT,
                                    "posted": before["posted"] + charged * SAT}
    assert await received(env, dest) == 100_000  # the first version paid it
    # The hot wallet's books and coins agree again.
    custody = await custody_status(env.sessions, None)
    assert all(t.ledger_sat == t.coins_sat for t in custody.tiers.values()), custody.tiers
    await env.check()

    # The chain switches back to the bump, then to the first version again: the payer,
    # refunded, is not charged again (the platform bears the higher fee) nor refunded twice.
    async with env.sessions() as s:
        bump_raw = (await s.execute(select(PayoutTx.raw_tx).where(
            PayoutTx.txid == bumped))).scalar_one()
    refunded = {**before, "available": before["available"] + charged * SAT,
                "posted": before["posted"] + charged * SAT}
    for gone, back in ((first.txid, bump_raw), (bumped, first.raw_tx)):
        env.chain.reorg(1, drop_txids=[gone])
        await env.runtime.backend.broadcast(back)
        env.chain.mine(1)
        await env.runtime.watcher.step()
        assert (await env.runtime.payouts.step()).rebooked == 1
        assert await env.balances() == refunded
        custody = await custody_status(env.sessions, None)
        assert all(t.ledger_sat == t.coins_sat for t in custody.tiers.values()), custody.tiers
        await env.check()


async def test_a_final_payout_is_not_looked_at_again(env: Env):
    await fund(env, 1_000_000)
    dest = external_address(env, 3)
    batch = await confirmed_payout(env, dest, 100_000)
    env.chain.mine(1)
    await env.runtime.payouts.step()
    assert (await payout(env)).final_at is None  # two deep
    env.chain.mine(1)
    await env.runtime.payouts.step()
    final = await payout(env)
    assert final.final_at is not None and final.confirmed_height == batch.confirmed_height
    # Deeper than anyone expects: the transaction leaves the chain; the job no longer looks.
    env.chain.reorg(3, drop_txids=[batch.txid])
    await env.runtime.watcher.step()
    report = await env.runtime.payouts.step()
    assert (report.rebroadcast, report.reorged_conflicts) == (0, 0)
    assert await env.runtime.backend.transaction(batch.txid) is None


async def test_a_reorged_sweep_and_the_payout_it_funded_both_come_back(env: Env):
    """The reorg drops a sweep and, with it, the payout spending the sweep's output: both
    are watched, the sweep is sent first (it is older), then the payout."""
    await fund(env, 1_000_000)
    dest = external_address(env, 4)
    async with env.sessions() as s:
        sweep = (await s.execute(select(PayoutBatch).where(
            PayoutBatch.kind == "sweep"))).scalar_one()
    batch = await confirmed_payout(env, dest, 100_000)
    before = await books(env)
    env.chain.reorg(2, drop_txids=[sweep.txid])  # the payout, its child, goes too
    await env.runtime.watcher.step()
    assert await env.runtime.backend.transaction(batch.txid) is None
    assert (await env.runtime.payouts.step()).rebroadcast == 2
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    assert await received(env, dest) == 100_000
    assert await books(env) == before
    await env.check()


async def test_a_reorged_payout_the_node_refuses_with_its_inputs_unspent_is_sent_again(
        env: Env):
    """Refused for the node's relay floor, not for a conflict: a person is told once, it is
    sent again at every pass and confirms once the node takes it."""
    from dataclasses import replace

    await fund(env, 1_000_000)
    dest = external_address(env, 5)
    batch = await confirmed_payout(env, dest, 100_000)
    before = await books(env)
    env.chain.reorg(1, drop_txids=[batch.txid])
    policy = env.chain.policy
    env.chain.policy = replace(policy, min_relay_sat_kvb=50_000)
    await env.runtime.watcher.step()
    for _ in range(2):
        report = await env.runtime.payouts.step()
        assert (report.rebroadcast, report.reorged_conflicts) == (0, 0) and report.errors
    async with env.sessions() as s:
        kinds = (await s.execute(select(ReviewItem.kind, ReviewItem.subject))).all()
    assert kinds == [("payout_reorged_rejected", batch.id)]
    env.chain.policy = policy
    assert (await env.runtime.payouts.step()).rebroadcast == 1
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    assert await received(env, dest) == 100_000
    assert await books(env) == before
    await env.check()


async def test_a_payout_already_final_when_it_is_booked_is_never_watched(env: Env):
    await fund(env, 1_000_000)
    await withdraw(env, external_address(env, 6), 100_000)
    await env.runtime.payouts.step()
    env.chain.mine(3)  # the job was away: three deep when it first looks
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    batch = await payout(env)
    assert batch.status == "confirmed" and batch.final_at is not None


async def test_a_sweep_whose_other_version_confirms_after_a_reorg_is_told_by_name(env: Env):
    """A sweep is not booked again by the job (its legs are a person's to adjust); the review
    item names the version that confirmed and both fees (found from outside: it said
    "another transaction", which was the move's own first version)."""
    import json

    from satvault.onchain.deposits import create_deposit

    async with env.sessions() as s, s.begin():
        d = await create_deposit(s, wallet=env.wallet, settings=env.settings)
    env.chain.pay(d.address, 500_000)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    decision = await env.runtime.sweeps.step()
    assert decision.batch_id is not None, decision.reason
    assert (await env.runtime.payouts.advance()).broadcast == 1
    async with env.sessions() as s:
        first = (await s.execute(select(PayoutTx).where(
            PayoutTx.batch_id == decision.batch_id))).scalar_one()
    bumped = await env.runtime.payouts.bump_fee(decision.batch_id, 5)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1
    env.chain.reorg(1, drop_txids=[bumped])
    await env.runtime.backend.broadcast(first.raw_tx)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    report = await env.runtime.payouts.step()
    assert (report.reorged_conflicts, report.rebooked) == (1, 0), report
    async with env.sessions() as s:
        item = (await s.execute(select(ReviewItem).where(
            ReviewItem.kind == "payout_reorged_conflict"))).scalar_one()
    reason = json.loads(item.details)["reason"]
    assert item.subject == decision.batch_id
    assert f"its own version {first.txid} (fee {first.fee_sat} sat" in reason, reason
