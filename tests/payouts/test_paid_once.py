"""A withdrawal is paid on-chain once even when the database forgets that it was paid.

Restoring a database backup taken before a payout leaves its withdrawal ``pending`` while
the payout is in the mempool or the chain; batched again from other coins it would be paid
twice. The signer remembers which signature paid which withdrawal and refuses a second one
that does not conflict with the first (:mod:`satvault.signer._paid`): the batch is
``stuck`` for a person, nothing is paid twice. A payout the node refused and no node ever
accepted is given up at the signer before its withdrawals are batched again, so that path
still pays, from other coins."""

from __future__ import annotations

import json
from dataclasses import replace

from sqlalchemy import delete, select, update

from satvault.onchain.addresses import parse_address
from satvault.onchain.models import ReviewItem
from satvault.payouts.models import PayoutBatch, PayoutInput, PayoutTx, Withdrawal
from tests.chainenv import Env
from tests.payouts.test_payouts import (
    PAYOUTS,
    RESERVE,
    SAT,
    add_coin,
    external_address,
    fund,
    received,
    withdraw,
)


def signer_log(env: Env) -> list[dict[str, object]]:
    path = env.settings.home / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def forget_the_payout(env: Env, withdrawal_id: str) -> None:
    """What a restore of a backup taken before the batch leaves: the withdrawal ``pending``
    (its money still held), no batch, no signed version."""
    async with env.sessions() as s, s.begin():
        batches = select(PayoutBatch.id).where(PayoutBatch.kind == "payout")
        await s.execute(update(Withdrawal).where(Withdrawal.id == withdrawal_id).values(
            status="pending", batch_id=None, txid=None))
        await s.execute(delete(PayoutInput).where(PayoutInput.batch_id.in_(batches)))
        await s.execute(delete(PayoutTx).where(PayoutTx.batch_id.in_(batches)))
        await s.execute(delete(PayoutBatch).where(PayoutBatch.kind == "payout"))


async def test_a_withdrawal_a_restored_database_batches_again_is_not_paid_twice(env: Env):
    await fund(env, 900_000)
    dest = external_address(env, 5)
    wd = await withdraw(env, dest, 100_000)
    assert (await env.runtime.payouts.step()).broadcast == 1
    async with env.sessions() as s:
        first = (await s.execute(PAYOUTS)).scalar_one().txid
    await forget_the_payout(env, wd.id)
    await add_coin(env, 2_000_000)  # the largest coin: the next batch spends it, not A's

    report = await env.runtime.payouts.step()
    assert (report.batched, report.signed, report.stuck) == (1, 0, 1), report
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
        versions = (await s.execute(select(PayoutTx).where(
            PayoutTx.batch_id == batch.id))).scalars().all()
        item = (await s.execute(select(ReviewItem).where(
            ReviewItem.kind == "payout_stuck"))).scalar_one()
    assert batch.status == "stuck" and versions == []
    assert f"payment {wd.id} was paid by {first}" in (batch.last_error or "")
    assert first in item.details
    assert signer_log(env)[-1]["error_type"] == "PaidBefore"
    for _ in range(2):  # asked again, nothing is signed
        assert (await env.runtime.payouts.step()).signed == 0

    # The first payout (mined meanwhile) is the only one that paid the destination.
    status = await env.runtime.backend.transaction(first)
    assert status is not None and status.confirmations >= 1
    to_dest = parse_address(dest, "regtest").script_pubkey
    assert [o.value_sat for o in status.tx.outputs if o.script_pubkey == to_dest] == [100_000]
    async with env.sessions() as s:
        assert (await s.get(Withdrawal, wd.id)).status == "batched"
    assert (await env.balances())["held"] == (100_000 + RESERVE) * SAT  # not released


async def test_a_payout_no_node_accepted_is_given_up_and_paid_from_other_coins(env: Env):
    await fund(env, 900_000)
    dest = external_address(env, 6)
    await withdraw(env, dest, 100_000)
    policy = env.chain.policy
    env.chain.policy = replace(policy, min_relay_sat_kvb=50_000)  # its fee is below the floor
    report = await env.runtime.payouts.step()
    assert (report.signed, report.broadcast, report.abandoned) == (1, 0, 1), report
    async with env.sessions() as s:
        given_up = (await s.execute(PAYOUTS)).scalar_one()
    assert given_up.status == "abandoned"
    line = signer_log(env)[-1]
    assert (line["event"], line["txid"]) == ("abandoned", given_up.txid)

    env.chain.policy = policy
    await add_coin(env, 2_000_000)  # paid again from a coin the first version did not spend
    report = await env.runtime.payouts.step()
    assert (report.signed, report.broadcast, report.stuck) == (1, 1, 0), report
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    assert await received(env, dest) == 100_000
    assert (await env.balances())["held"] == 0
    await env.check()
