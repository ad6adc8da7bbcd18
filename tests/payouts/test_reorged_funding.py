"""A move booked as confirmed whose input's own transaction a reorg took away for good (a
deposit the chain watcher reversed) can never confirm as booked: a person is told, once
(found from outside: the move waited forever with a warning in the log, the books counting
it, its withdrawals still read as paid)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from satvault.onchain.models import OnchainPayment, ReviewItem
from tests.chainenv import Env
from tests.payouts.test_payouts import fund

SAT = 1000


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"payout_final_confirmations": 10}


async def test_a_sweep_whose_deposit_left_the_chain_is_told_to_a_person(env: Env):
    await fund(env, 1_000_000)  # a deposit, credited, then swept and booked
    async with env.sessions() as s:
        deposit = (await s.execute(select(OnchainPayment).where(
            OnchainPayment.credit_state == "credited"))).scalars().first()
    assert deposit is not None and deposit.block_height is not None
    depth = env.chain.height - deposit.block_height + 1
    env.chain.reorg(depth, drop_txids=[deposit.txid])  # the sweep leaves with it
    env.chain.mine(1)
    for _ in range(2):  # the watcher reverses the deposit; the job finds the sweep stranded
        await env.runtime.watcher.step()
        report = await env.runtime.payouts.step()
    async with env.sessions() as s:
        items = (await s.execute(select(ReviewItem).where(
            ReviewItem.kind == "payout_reorged_conflict"))).scalars().all()
    assert len(items) == 1, items
    reason = json.loads(items[0].details)["reason"]
    assert f"{deposit.txid}:{deposit.vout}" in reason and "took its credit back" in reason, reason
    assert report.reorged_conflicts == 1, report
    await env.runtime.payouts.step()  # told once: one open item per batch
    async with env.sessions() as s:
        assert len((await s.execute(select(ReviewItem).where(
            ReviewItem.kind == "payout_reorged_conflict"))).scalars().all()) == 1
