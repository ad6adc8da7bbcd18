"""Found from outside (stop 32): a withdrawal to a valid future-segwit address (BIP350:
witness v1 with a 40-byte program, or v2..v16) is accepted by the API, but the payout job
sized its output as 43 vB whatever its length: at the floor feerate the payout paid less
than the minimum relay fee, the node rejected it, and the batch was abandoned and re-batched
the same way at every pass. Outputs are now sized by their script's length."""

from __future__ import annotations

from embit import bech32
from sqlalchemy import select

from satvault.payouts.models import PayoutBatch, Withdrawal
from tests.chainenv import Env
from tests.payouts.test_payouts import fund, withdraw

SAT = 1000


async def test_payout_to_future_witness_address_is_relayed_at_floor_feerate(env: Env):
    await fund(env, 500_000)
    env.chain.set_feerate(1)  # a quiet fee market: the configured floor, 1 sat/vB
    dest = bech32.encode("bcrt", 1, bytes(range(40)))  # valid bech32m, witness v1, 40 bytes
    await withdraw(env, dest, 50_000)
    for _ in range(3):
        await env.runtime.payouts.step()
    async with env.sessions() as s:
        batches = (await s.execute(select(PayoutBatch.status, PayoutBatch.last_error).where(
            PayoutBatch.kind == "payout"))).all()
        w = (await s.execute(select(Withdrawal))).scalar_one()
    assert [b.status for b in batches] == ["broadcast"], batches
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    async with env.sessions() as s:
        w = (await s.execute(select(Withdrawal))).scalar_one()
    assert w.status == "confirmed"
    await env.check()


async def test_one_future_witness_withdrawal_blocks_everyone_elses_at_floor_feerate(env: Env):
    """The same, seen from another customer: a withdrawal to an ordinary address batched
    with it is never paid either, as long as the fee market stays at the floor."""
    from tests.payouts.test_payouts import external_address

    await fund(env, 500_000)
    env.chain.set_feerate(1)
    await withdraw(env, bech32.encode("bcrt", 16, bytes(40)), 50_000)  # witness v16, 40 bytes
    await withdraw(env, external_address(env, 0), 60_000)  # an ordinary P2WPKH withdrawal
    for _ in range(3):
        await env.runtime.payouts.step()
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    async with env.sessions() as s:
        statuses = sorted(w.status for w in (await s.execute(select(Withdrawal))).scalars())
    assert statuses == ["confirmed", "confirmed"], statuses
