"""Sweeps of confirmed deposit coins into the semi-cold and cold wallets, end to end on simnet:
the split (ratio, floor, ceiling), the ledger following the coins tier by tier, payouts paid
from semi-cold coins only, the waiting rules, a fee bump, a reorg, concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from satvault.custody.sweeps import SweepPlanner, split_sweep
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import get_account
from satvault.onchain.deposits import create_deposit
from satvault.onchain.models import (
    COINBASE_MATURITY,
    OnchainAddress,
    OnchainPayment,
    OnchainWallet,
)
from satvault.payouts.models import MoveKind, PayoutBatch, PayoutInput, PayoutTx
from tests.chainenv import Env
from tests.custody.conftest import cold_descriptor
from tests.payouts.test_payouts import external_address, withdraw

SAT = 1000


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"cold_descriptor": cold_descriptor(2, 3), "semicold_floor_sat": 0,
            "semicold_ceiling_sat": 10_000_000}


async def deposit(env: Env, sat: int, *, mine: bool = True) -> str:
    async with env.sessions() as s, s.begin():
        d = await create_deposit(s, wallet=env.wallet, settings=env.settings)
    txid = env.chain.pay(d.address, sat)
    if mine:
        env.chain.mine(1)
        await env.runtime.watcher.step()
    return txid


async def tiers(env: Env) -> dict[str, int]:
    """Each platform coin account's balance in sat, as the ledger has it."""
    async with env.sessions() as s:
        p = await ensure_platform_accounts(s, "BTC")
        out = {}
        for name in ("deposit_wallet", "hot_wallet", "cold_wallet", "network_fees"):
            b = (await get_account(s, getattr(p, name).id)).balances
            out[name] = (b.debits_posted - b.credits_posted) // SAT
    return out


async def outputs_by_role(env: Env, txid: str) -> dict[str, int]:
    status = await env.runtime.backend.transaction(txid)
    assert status is not None
    by_role: dict[str, int] = {}
    async with env.sessions() as s:
        for o in status.tx.outputs:
            role = (await s.execute(select(OnchainWallet.role).join(
                OnchainAddress, OnchainAddress.wallet_id == OnchainWallet.id).where(
                OnchainAddress.script_pubkey == o.script_pubkey.hex()))).scalar_one()
            by_role[role] = by_role.get(role, 0) + o.value_sat
    return by_role


def test_split_follows_ratio_floor_and_ceiling():
    kw = dict(percent=40, floor_sat=0, ceiling_sat=10_000_000, has_cold=True)
    assert split_sweep(1_000_000, 0, **kw) == (400_000, 600_000)
    # Under the floor, semi-cold is filled up to it first.
    assert split_sweep(1_000_000, 0, **{**kw, "floor_sat": 700_000}) == (700_000, 300_000)
    # Near the ceiling, only the room left goes semi-cold; above it, everything goes cold.
    assert split_sweep(1_000_000, 9_900_000, **kw) == (100_000, 900_000)
    assert split_sweep(1_000_000, 12_000_000, **kw) == (0, 1_000_000)
    # No cold wallet configured: all of it to semi-cold. Dust never becomes an output.
    assert split_sweep(1_000_000, 0, **{**kw, "has_cold": False}) == (1_000_000, 0)
    assert split_sweep(500, 0, **kw) == (0, 500)
    assert split_sweep(1_000_000, 10_000_000 - 100, **kw) == (0, 1_000_000)
    for net in (1, 293, 294, 999, 123_457, 10**8):
        for semicold in (0, 5_000_000, 20_000_000):
            semi, cold = split_sweep(net, semicold, **kw)
            assert semi + cold == net and semi >= 0 and cold >= 0


async def test_deposits_swept_40_60_and_the_ledger_follows(env: Env):
    await deposit(env, 600_000)
    await deposit(env, 400_000)
    before = await env.balances()
    assert await tiers(env) == {"deposit_wallet": 1_000_000, "hot_wallet": 0,
                                "cold_wallet": 0, "network_fees": 0}
    batch_id = await env.sweep()
    async with env.sessions() as s:
        batch = await s.get(PayoutBatch, batch_id)
        assert batch is not None and batch.kind is MoveKind.SWEEP and batch.txid
        coins = (await s.execute(select(OnchainPayment).join(
            PayoutInput, PayoutInput.payment_id == OnchainPayment.id).where(
            PayoutInput.batch_id == batch_id))).scalars().all()
    assert len(coins) == 2 and all(c.spent_by == batch.txid for c in coins)
    moved = await outputs_by_role(env, batch.txid)
    fee = batch.fee_sat
    net = 1_000_000 - fee
    assert moved == {"hot": net * 40 // 100, "cold": net - net * 40 // 100}
    assert await tiers(env) == {"deposit_wallet": 0, "hot_wallet": moved["hot"],
                                "cold_wallet": moved["cold"], "network_fees": fee}
    assert await env.balances() == before  # customers' money did not move
    # The swept outputs are internal moves: never credited as deposits.
    await env.runtime.watcher.step()
    assert await tiers(env) == {"deposit_wallet": 0, "hot_wallet": moved["hot"],
                                "cold_wallet": moved["cold"], "network_fees": fee}
    await env.check()


async def test_withdrawals_are_paid_from_semicold_coins_only(env: Env):
    await deposit(env, 1_000_000)
    # Before any sweep the deposit coin is not spendable: the payout waits for funds.
    await withdraw(env, external_address(env, 1), 100_000)
    report = await env.runtime.payouts.step()
    assert report.waiting_for_funds and report.batched == 0
    await env.sweep()
    await deposit(env, 700_000)  # a fresh deposit coin beside the semi-cold ones
    report = await env.runtime.payouts.step()
    assert report.batched == 1 and report.broadcast == 1
    async with env.sessions() as s:
        payout = (await s.execute(select(PayoutBatch).where(
            PayoutBatch.kind == MoveKind.PAYOUT))).scalar_one()
        roles = (await s.execute(select(OnchainWallet.role).join(
            OnchainAddress, OnchainAddress.wallet_id == OnchainWallet.id).join(
            OnchainPayment, OnchainPayment.address_id == OnchainAddress.id).join(
            PayoutInput, PayoutInput.payment_id == OnchainPayment.id).where(
            PayoutInput.batch_id == payout.id))).scalars().all()
    assert roles and set(roles) == {"hot"}
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    t = await tiers(env)
    assert t["deposit_wallet"] == 700_000 and t["hot_wallet"] < 400_000
    await env.check()


@pytest.mark.parametrize("settings_overrides", [
    {"cold_descriptor": cold_descriptor(2, 3), "semicold_floor_sat": 0,
     "semicold_ceiling_sat": 300_000}])
async def test_above_the_ceiling_everything_goes_cold(env: Env):
    await deposit(env, 1_000_000)
    first = await env.sweep()
    await deposit(env, 1_000_000)
    second = await env.sweep()
    async with env.sessions() as s:
        txids = [(await s.get(PayoutBatch, b)).txid for b in (first, second)]  # type: ignore[union-attr]
    one, two = [await outputs_by_role(env, t) for t in txids]
    assert one["hot"] == 300_000  # 40 % would be ~400,000: capped at the ceiling
    assert two == {"cold": two["cold"]}  # semi-cold is full: all of it cold
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"sweep_min_sat": 500_000,
                                                 "sweep_max_wait_blocks": 3,
                                                 "sweep_max_feerate_sat_vb": 5,
                                                 "sweep_window_utc": "1-5"}])
async def test_a_sweep_waits_for_value_age_fees_and_its_window(env: Env):
    night = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
    noon = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    await deposit(env, 200_000)
    planner: SweepPlanner = env.runtime.sweeps
    assert "outside the sweep window" in (await planner.step(now=noon)).reason
    assert "waiting for 500000" in (await planner.step(now=night)).reason
    env.chain.set_feerate(50)
    assert "above the sweep cap" in (await planner.step(now=night)).reason
    env.chain.set_feerate(1)
    env.chain.mine(2)  # the coin has now waited 3 blocks: swept though small
    decision = await planner.step(now=night)
    assert decision.batch_id is not None and decision.inputs == 1


async def test_a_coin_worth_less_than_its_spending_fee_waits_for_cheaper_fees(env: Env):
    """Found from outside: a 294 sat deposit was credited (it is the customer's) and swept at
    once, at 20 sat/vB: its input cost 1,360 sat of fee, paid by the platform. A coin worth no
    more than its input costs at the sweep's feerate stays where it is; it is swept with a
    later sweep when fees are low enough, and the ledger follows the coins either way."""
    dust = await deposit(env, 1_000)
    await deposit(env, 900_000)
    env.chain.set_feerate(20)  # 68 vB x 20 = 1,360 sat to spend the 1,000 sat coin
    planner: SweepPlanner = env.runtime.sweeps
    decision = await planner.step()
    assert decision.batch_id is not None and decision.inputs == 1, decision
    async with env.sessions() as s:
        left = (await s.execute(select(OnchainPayment).where(
            OnchainPayment.txid == dust))).scalar_one()
    assert left.spent_by is None
    await env.runtime.payouts.step()  # the sweep is signed and sent
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()  # and seen confirmed
    env.chain.set_feerate(2)  # 136 sat to spend it now: worth it
    env.chain.mine(3)
    await env.runtime.watcher.step()
    decision = await planner.step()
    assert decision.batch_id is not None and decision.inputs == 1, decision
    await env.runtime.payouts.step()
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    async with env.sessions() as s:
        swept = (await s.execute(select(OnchainPayment).where(
            OnchainPayment.txid == dust))).scalar_one()
    assert swept.spent_by is not None
    await env.check()


async def test_a_fee_bump_takes_the_fee_from_the_cold_share_and_books_once(env: Env):
    await deposit(env, 1_000_000)
    decision = await env.runtime.sweeps.step()
    assert decision.batch_id
    await env.runtime.payouts.advance()
    async with env.sessions() as s:
        old = await s.get(PayoutBatch, decision.batch_id)
        assert old is not None
        old_txid, old_fee = old.txid, old.fee_sat
    new_txid = await env.runtime.payouts.bump_fee(decision.batch_id, 25)
    assert new_txid != old_txid
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1
    async with env.sessions() as s:
        batch = await s.get(PayoutBatch, decision.batch_id)
        assert batch is not None and batch.txid == new_txid and batch.fee_sat > old_fee
        versions = (await s.execute(select(PayoutTx).where(
            PayoutTx.batch_id == decision.batch_id))).scalars().all()
    assert len(versions) == 2
    moved = await outputs_by_role(env, new_txid)
    assert moved["hot"] == decision.to_semicold_sat  # the semi-cold share is untouched
    assert moved["cold"] == decision.to_cold_sat - (batch.fee_sat - old_fee)
    t = await tiers(env)
    assert t == {"deposit_wallet": 0, "hot_wallet": moved["hot"], "cold_wallet": moved["cold"],
                 "network_fees": batch.fee_sat}
    await env.check()


async def test_a_reorg_that_drops_the_sweep_rebroadcasts_it_and_books_once(env: Env):
    await deposit(env, 1_000_000)
    decision = await env.runtime.sweeps.step()
    await env.runtime.payouts.advance()
    async with env.sessions() as s:
        txid = (await s.get(PayoutBatch, decision.batch_id)).txid  # type: ignore[union-attr]
    env.chain.mine(1)
    env.chain.reorg(1, drop_txids=[txid])  # the block with the sweep is gone, so is the tx
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 0  # rebroadcast, not booked
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1
    t = await tiers(env)
    assert t["deposit_wallet"] == 0 and t["hot_wallet"] + t["cold_wallet"] + \
        t["network_fees"] == 1_000_000
    await env.check()


@pytest.mark.parametrize("seen", [False, True], ids=["unseen", "seen-in-the-mempool"])
async def test_a_reorg_that_takes_the_deposit_abandons_the_sweep_and_moves_nothing(env: Env,
                                                                                   seen):
    """``seen``: the watcher saw the sweep in the mempool first, so it noted the coins as
    spent by it; given up, the sweep no longer spends them (found from outside: the surviving
    coin stayed marked spent and was never swept again)."""
    keep = await deposit(env, 300_000)
    gone = await deposit(env, 700_000)
    decision = await env.runtime.sweeps.step()
    assert decision.inputs == 2
    await env.runtime.payouts.advance()
    if seen:
        await env.runtime.watcher.step()
    # The block with the 700,000 deposit is replaced by one without it (a double spend would
    # do the same); the sweep spending it cannot exist any more.
    env.chain.reorg(1, drop_txids=[gone])
    await env.runtime.watcher.step()
    await env.runtime.payouts.advance()
    async with env.sessions() as s:
        batch = await s.get(PayoutBatch, decision.batch_id)
        assert batch is not None and batch.status == "abandoned"
    assert (await env.balances())["available"] == 300_000 * SAT  # the vanished credit reversed
    assert (await tiers(env))["deposit_wallet"] == 300_000
    # The coin that is still there is swept again by the next sweep.
    again = await env.sweep()
    async with env.sessions() as s:
        coins = (await s.execute(select(OnchainPayment.txid).join(
            PayoutInput, PayoutInput.payment_id == OnchainPayment.id).where(
            PayoutInput.batch_id == again))).scalars().all()
    assert coins == [keep]
    assert (await tiers(env))["deposit_wallet"] == 0
    await env.check()


async def test_a_coinbase_deposit_is_credited_and_swept_only_once_mature(env: Env):
    """A pool paying a deposit address in its coinbase: consensus lets nobody spend that coin
    before it has 100 confirmations (COINBASE_MATURITY). It is credited only then, and no
    sweep takes it before. Guards against a sweep holding the immature coin, which the node
    refused (bad-txns-premature-spend-of-coinbase): abandoned and planned again with the same
    coin at every step, so no deposit at all was swept for 100 blocks."""
    await deposit(env, 500_000, mine=False)
    async with env.sessions() as s, s.begin():
        mined_to = await create_deposit(s, wallet=env.wallet, settings=env.settings)
    env.chain.mine(1, to_address=mined_to.address)  # the ordinary deposit is in that block
    await env.runtime.watcher.step()
    async with env.sessions() as s:
        mined = (await s.execute(select(OnchainPayment).where(
            OnchainPayment.is_coinbase.is_(True)))).scalar_one()
        ordinary = (await s.execute(select(OnchainPayment).where(
            OnchainPayment.is_coinbase.is_(False)))).scalar_one()
    assert (mined.required_confirmations, mined.credit_state) == (COINBASE_MATURITY, "pending")
    assert ordinary.credit_state == "credited"
    assert (await env.balances())["available"] == 500_000 * SAT
    decision = await env.runtime.sweeps.step()
    assert decision.inputs == 1, decision.reason  # the ordinary deposit alone
    report = await env.runtime.payouts.advance()
    assert (report.broadcast, report.abandoned) == (1, 0), report
    env.chain.mine(COINBASE_MATURITY - 2)  # the coinbase has 99 confirmations
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1
    assert (await env.balances())["available"] == 500_000 * SAT
    assert (await env.runtime.sweeps.step()).batch_id is None
    env.chain.mine(1)  # 100: it may be spent in the next block
    await env.runtime.watcher.step()
    assert (await env.balances())["available"] == (500_000 + mined.value_sat) * SAT
    decision = await env.runtime.sweeps.step()
    assert decision.inputs == 1, decision.reason
    report = await env.runtime.payouts.advance()
    assert (report.broadcast, report.abandoned) == (1, 0), report
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1
    assert (await tiers(env))["deposit_wallet"] == 0
    await env.check()


async def test_two_planners_at_once_store_one_sweep(env: Env):
    await deposit(env, 500_000)
    await deposit(env, 500_000)
    other = SweepPlanner(env.sessions, env.runtime.backend, env.settings, env.runtime.payouts)
    a, b = await asyncio.gather(env.runtime.sweeps.step(), other.step())
    planned = [d for d in (a, b) if d.batch_id]
    assert len(planned) == 1, (a, b)
    async with env.sessions() as s:
        sweeps = (await s.execute(select(PayoutBatch).where(
            PayoutBatch.kind == MoveKind.SWEEP))).scalars().all()
    assert len(sweeps) == 1
