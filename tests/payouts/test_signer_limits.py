"""The signer's own caps seen from the payout job (issue 11 §3): a batch the signer holds back
with LimitExceeded is not `stuck`. It waits in `signing` with one review item, whatever the
number of retries, and is paid once the 24-hour window has rolled on (here: a signer
restarted a day later over the same audit log). A payout is sized to the per-transaction cap
with the fee it carries, so the signer never refuses it for that cap: at a fee too high for a
withdrawal, no batch is stored and it waits for fees to fall."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from satvault.onchain.models import ReviewItem
from satvault.payouts.job import PayoutPlan, estimate_vsize, plan_payout
from satvault.payouts.models import PayoutBatch, PayoutTx, Withdrawal
from satvault.signer.core import HotSigner
from tests.chainenv import SEED, Env
from tests.payouts.test_payouts import (
    PAYOUTS,
    RESERVE,
    SAT,
    external_address,
    fund,
    received,
    withdraw,
)

DAILY = 150_000


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"signer_max_tx_sat": 120_000, "signer_max_daily_sat": DAILY}


def lower_signer_cap(env: Env, max_tx_sat: int) -> None:
    """The signer process runs with its own settings: here a lower per-transaction cap than
    the web side believes (which would refuse larger withdrawals itself)."""
    env.signer.hot = HotSigner(SEED, "regtest", audit_log=env.settings.home / "audit.jsonl",
                               max_tx_sat=max_tx_sat, max_daily_sat=DAILY)


async def test_a_batch_over_the_signers_daily_cap_waits_then_pays(env: Env):
    await fund(env, 1_000_000)
    first, second = external_address(env, 0), external_address(env, 1)
    await withdraw(env, first, 100_000)
    report = await env.runtime.payouts.step()
    assert report.signed == 1 and report.broadcast == 1 and report.signer_limited == 0
    env.chain.mine(1)  # its change is the coin the next payout spends
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1

    await withdraw(env, second, 100_000)  # 100 000 + fee: more than the 50 000 left today
    for _ in range(3):  # every step asks again; nothing piles up
        report = await env.runtime.payouts.step()
        assert report.signer_limited >= 1 and report.stuck == 0 and report.signed == 0
    async with env.sessions() as s:
        batches = (await s.execute(PAYOUTS.order_by(PayoutBatch.created_at))).scalars().all()
        items = (await s.execute(select(ReviewItem))).scalars().all()
        versions = (await s.execute(select(PayoutTx).join(PayoutBatch).where(
            PayoutBatch.kind == "payout"))).scalars().all()
    assert [b.status for b in batches] == ["confirmed", "signing"]
    assert "rolling 24-hour cap of 150000 sat" in (batches[1].last_error or "")
    assert [(i.kind, i.subject) for i in items] == [("signer_limit", batches[1].id)]
    assert len(versions) == 1
    assert (await env.balances())["held"] == (100_000 + RESERVE) * SAT  # still held
    assert await received(env, second) == 0

    # A day later (the signer restarted over its audit log), the window has room again.
    tomorrow = datetime.now(UTC) + timedelta(hours=24, minutes=1)
    env.signer.hot = HotSigner(SEED, "regtest", audit_log=env.settings.home / "audit.jsonl",
                               max_tx_sat=120_000,
                               max_daily_sat=DAILY, clock=lambda: tomorrow)
    report = await env.runtime.payouts.step()
    assert report.signed == 1 and report.broadcast == 1 and report.signer_limited == 0
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    assert await received(env, first) == 100_000 and await received(env, second) == 100_000
    assert (await env.balances())["held"] == 0
    await env.check()


async def test_a_batch_over_the_signers_per_transaction_cap_is_not_stuck(env: Env):
    await fund(env, 500_000)
    lower_signer_cap(env, 90_000)
    await withdraw(env, external_address(env, 2), 100_000)
    report = await env.runtime.payouts.step()
    assert report.signer_limited == 1 and report.stuck == 0  # one batch, one attempt
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    assert batch.status == "signing"
    assert "per-transaction cap of 90000 sat" in (batch.last_error or "")


@pytest.mark.parametrize("settings_overrides", [{"signer_max_tx_sat": 120_000,
                                                 "signer_max_daily_sat": 1_000_000}])
async def test_batches_are_sized_to_the_signers_per_transaction_cap(env: Env):
    await fund(env, 500_000)
    await withdraw(env, external_address(env, 3), 60_000)
    await withdraw(env, external_address(env, 4), 70_000)  # together over 120,000: two batches
    report = await env.runtime.payouts.step()
    assert report.batched == 1 and report.signed == 1 and report.signer_limited == 0
    env.chain.mine(1)  # its change pays the second one
    await env.runtime.watcher.step()
    report = await env.runtime.payouts.step()
    assert report.confirmed == 1 and report.batched == 1 and report.signed == 1
    assert report.signer_limited == 0
    async with env.sessions() as s:
        assert len((await s.execute(PAYOUTS)).scalars().all()) == 2


async def test_a_withdrawal_the_signer_could_never_sign_is_refused(env: Env):
    from satvault.payouts.errors import InvalidWithdrawal

    await fund(env, 500_000)
    # The web side's cap is 120,000 sat per transaction (fee included): with the 5,000 sat
    # reserve, 115,000 is the most one withdrawal may be.
    with pytest.raises(InvalidWithdrawal, match="limit of 115000 sat"):
        await withdraw(env, external_address(env, 5), 115_001)
    assert (await env.balances())["held"] == 0
    await withdraw(env, external_address(env, 5), 115_000)


def test_a_payout_is_sized_to_the_cap_with_the_fee_it_carries():
    """The pure sizing (plan_payout): payments plus the real fee within the cap, oldest
    first; one that does not fit waits without holding back the younger ones."""
    spk, cap = b"\x00" * 22, 120_000
    two_outputs = estimate_vsize(1, [spk, spk])  # 141 vB
    # At the ceiling: 8,460 sat of fee at 60 sat/vB is over the cap, 141 at 1 sat/vB is not.
    assert plan_payout([115_000], [spk], [1_000_000], feerate=60, cap_sat=cap).withdrawals \
        == ()
    assert plan_payout([115_000], [spk], [1_000_000], feerate=1, cap_sat=cap) == PayoutPlan(
        (0,), 1, 115_000, two_outputs, 1_000_000 - 115_000 - two_outputs)
    # Two that fit with their reserves but not with the market fee: the older goes alone.
    assert plan_payout([55_000, 55_000], [spk, spk], [1_000_000], feerate=60,
                       cap_sat=cap).withdrawals == (0,)
    assert plan_payout([55_000, 55_000], [spk, spk], [1_000_000], feerate=1,
                       cap_sat=cap).withdrawals == (0, 1)
    # The oldest cannot go at this fee: the younger is paid meanwhile.
    assert plan_payout([115_000, 20_000], [spk, spk], [1_000_000], feerate=60,
                       cap_sat=cap).withdrawals == (1,)
    # Change below dust goes to the fee, which counts against the cap.
    plan = plan_payout([50_000], [spk], [50_000 + two_outputs + 100], feerate=1, cap_sat=cap)
    assert (plan.fee_sat, plan.change_sat) == (two_outputs + 100, 0)
    # Not enough coins: no payout, and the plan says so.
    plan = plan_payout([50_000], [spk], [20_000, 10_000], feerate=1, cap_sat=cap)
    assert (plan.funded, plan.coins) == (False, 2)


@pytest.mark.parametrize("settings_overrides", [{"signer_max_tx_sat": 120_000,
                                                 "signer_max_daily_sat": 10_000_000}])
async def test_a_withdrawal_at_the_ceiling_waits_for_fees_then_is_paid(env: Env):
    """A withdrawal of the most one may ask (the signer's per-transaction cap less the fee
    reserve) while the market fee is above the reserve: no batch is stored, the withdrawal
    waits, and it is paid once fees fall. Guards against batching it at that fee: the signer
    refused the PSBT (payments + fee over its cap), and the PSBT, its fee fixed in it, was
    refused again at every step, even after fees fell: the withdrawal and its hold were stuck
    for ever."""
    await fund(env, 1_000_000)
    ceiling = env.settings.signer_max_tx_sat - env.settings.withdrawal_fee_reserve_sat
    dest = external_address(env, 7)
    wd = await withdraw(env, dest, ceiling)
    env.chain.set_feerate(60)  # 60 sat/vB * ~141 vB = ~8,500 sat, above the 5,000 reserve
    report = await env.runtime.payouts.step()
    assert (report.batched, report.signer_limited, report.waiting_for_fees) == (0, 0, True)
    async with env.sessions() as s:
        assert (await s.execute(PAYOUTS)).scalars().all() == []
        assert (await s.get(Withdrawal, wd.id)).status == "pending"  # type: ignore[union-attr]
    assert (await env.balances())["held"] == (ceiling + RESERVE) * SAT
    env.chain.set_feerate(1)  # the fee market calms down
    report = await env.runtime.payouts.step()
    assert (report.batched, report.broadcast, report.waiting_for_fees) == (1, 1, False)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    assert await received(env, dest) == ceiling
    assert (await env.balances())["held"] == 0
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"signer_max_tx_sat": 120_000,
                                                 "signer_max_daily_sat": 10_000_000}])
async def test_a_batch_over_the_cap_at_the_market_fee_pays_fewer_withdrawals(env: Env):
    """Two withdrawals whose amounts and fee reserves fit the signer's cap together, but not
    with the market fee: the batch pays the older one alone and the other waits for the next
    batch (it once carried both and the signer refused it at every step)."""
    await fund(env, 1_000_000)
    first, second = external_address(env, 8), external_address(env, 9)
    await withdraw(env, first, 55_000)
    await withdraw(env, second, 55_000)  # 2 * (55,000 + 5,000 reserve) = the 120,000 cap
    env.chain.set_feerate(60)  # ~10,300 sat for both: 120,300 would leave
    report = await env.runtime.payouts.step()
    assert (report.batched, report.broadcast, report.signer_limited) == (1, 1, 0)
    env.chain.mine(1)  # its change pays the second one
    await env.runtime.watcher.step()
    report = await env.runtime.payouts.step()
    assert (report.confirmed, report.batched, report.broadcast) == (1, 1, 1)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    assert await received(env, first) == 55_000 and await received(env, second) == 55_000
    assert (await env.balances())["held"] == 0
    await env.check()


async def test_a_fee_spike_does_not_make_the_platform_pay_for_a_tiny_withdrawal(env: Env):
    """Found from outside: at 500 sat/vB (the configured ceiling) a 1,000 sat withdrawal was
    batched alone with a 70,500 sat fee: its owner paid the 5,000 sat reserve and the platform
    the other 65,500, for every such withdrawal anyone asked for while fees were high. A batch
    whose fee is above its withdrawals' reserves by more than payout_max_fee_excess_sat waits
    for lower fees, its money held; it goes once they fall."""
    await fund(env, 1_000_000)
    dest = external_address(env, 9)
    wd = await withdraw(env, dest, 1_000)
    env.chain.set_feerate(500)
    report = await env.runtime.payouts.step()
    assert (report.batched, report.waiting_for_fees) == (0, True)
    async with env.sessions() as s:
        assert (await s.execute(PAYOUTS)).scalars().all() == []
        assert (await s.get(Withdrawal, wd.id)).status == "pending"  # type: ignore[union-attr]
    env.chain.set_feerate(40)  # ~141 vB * 40 = 5,640 sat: 640 above the reserve, allowed
    report = await env.runtime.payouts.step()
    assert (report.batched, report.broadcast, report.waiting_for_fees) == (1, 1, False)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    assert await received(env, dest) == 1_000
    await env.check()  # the ledger balances, the fee's excess booked once
