"""Payments to the platform's own move addresses (a payout's change, a sweep's destination)
made by someone else. The address is visible on chain once used, so anyone can pay it; such a
payment is none of our moves, so the payout job never books it, and the watcher books it like
an operator's funding of that tier (equity → the tier's account), exactly once, reversed if a
reorg takes it away. The change of our own moves stays booked by the payout job alone."""

from __future__ import annotations

from sqlalchemy import func, select

from satvault.custody.status import custody_status
from satvault.ledger.models import LedgerTransfer
from satvault.onchain.models import OnchainAddress, OnchainPayment, OnchainWallet
from satvault.payouts.models import PayoutBatch
from tests.chainenv import Env
from tests.custody.test_sweeps import tiers
from tests.payouts.test_own_addresses import pay_out
from tests.payouts.test_payouts import PAYOUTS, external_address, fund, withdraw

SAT = 1000


async def paid_out_change(env: Env) -> OnchainAddress:
    """Fund the semi-cold wallet, pay one withdrawal, and return its change address."""
    await fund(env, 1_000_000)
    await withdraw(env, external_address(env, 0), 100_000)
    await pay_out(env)
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
        assert batch.status == "confirmed"
        change = await s.get(OnchainAddress, batch.change_address_id)
    assert change is not None
    return change


async def watcher_moves(env: Env, txid: str) -> list[str]:
    """The ledger transfers the watcher made for the outputs of ``txid``."""
    async with env.sessions() as s:
        return list((await s.execute(select(LedgerTransfer.id).where(
            LedgerTransfer.id.like(f"oc:in:{txid}:%")).order_by(LedgerTransfer.id))
        ).scalars())


async def assert_clean(env: Env) -> None:
    st = await custody_status(env.sessions, env.runtime.backend)
    assert st.differences == [], st.as_dict()
    await env.check()


async def test_an_outsider_paying_a_change_address_is_booked_once_as_funding(env: Env):
    change = await paid_out_change(env)
    await assert_clean(env)
    before = await tiers(env)
    txid = env.chain.pay(change.address, 2_000_000)
    await env.runtime.watcher.step()  # in the mempool: held, counted with the tier's coins
    await assert_clean(env)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    after = await tiers(env)
    assert after["hot_wallet"] - before["hot_wallet"] == 2_000_000
    assert len(await watcher_moves(env, txid)) == 2  # hold, post
    async with env.sessions() as s:
        p = (await s.execute(select(OnchainPayment).where(OnchainPayment.txid == txid))
             ).scalar_one()
    assert p.credit_state == "credited" and p.wallet_id is None
    await assert_clean(env)
    # The coin is the semi-cold wallet's like any other: the next payout spends it (the
    # largest coin first).
    await withdraw(env, external_address(env, 1), 50_000)
    await pay_out(env)
    async with env.sessions() as s:
        spent = (await s.execute(select(OnchainPayment.spent_by).where(
            OnchainPayment.txid == txid))).scalar_one()
    assert spent is not None
    await assert_clean(env)


async def test_a_reorg_taking_the_outsiders_payment_away_reverses_it(env: Env):
    change = await paid_out_change(env)
    before = await tiers(env)
    txid = env.chain.pay(change.address, 10_000)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await tiers(env))["hot_wallet"] - before["hot_wallet"] == 10_000
    env.chain.reorg(1, drop_txids=[txid])
    report = await env.runtime.watcher.step()
    assert report.conflicted == 1
    async with env.sessions() as s:
        p = (await s.execute(select(OnchainPayment).where(OnchainPayment.txid == txid))
             ).scalar_one()
    assert p.status == "conflicted" and p.credit_state == "reversed"
    assert await tiers(env) == before
    await env.runtime.watcher.step()
    assert len(await watcher_moves(env, txid)) == 3  # hold, post, reversal: nothing twice
    await assert_clean(env)


async def test_our_own_payouts_change_is_booked_by_the_payout_job_alone(env: Env):
    """Including a fee bump's: the replacement spends the same coins, already marked spent by
    the version the watcher saw first."""
    await fund(env, 1_000_000)
    await withdraw(env, external_address(env, 0), 100_000)
    await env.runtime.payouts.step()
    await env.runtime.watcher.step()  # the original seen in the mempool
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    replacement = await env.runtime.payouts.bump_fee(batch.id, batch.feerate_sat_vb + 10)
    await env.runtime.watcher.step()
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
        change = (await s.execute(select(OnchainPayment).where(
            OnchainPayment.address_id == batch.change_address_id))).scalars().all()
    assert batch.status == "confirmed" and batch.txid == replacement
    # The original's change went with the original (conflicted); neither was booked here.
    assert sorted((p.txid == replacement, p.status) for p in change) == [
        (False, "conflicted"), (True, "confirmed")]
    assert all(p.credit_state == "none" for p in change)
    for p in change:
        assert await watcher_moves(env, p.txid) == []
    await assert_clean(env)
    # And the sweep's outputs are the sweep's booking alone too.
    async with env.sessions() as s:
        sweep = (await s.execute(select(PayoutBatch.txid).where(PayoutBatch.kind == "sweep"))
                 ).scalar_one()
    assert sweep is not None and await watcher_moves(env, sweep) == []


async def test_a_watcher_restart_books_the_outsiders_payment_once(env: Env):
    change = await paid_out_change(env)
    before = await tiers(env)
    txid = env.chain.pay(change.address, 10_000)
    await env.runtime.watcher.step()  # held
    env.chain.mine(1)
    for _ in range(2):  # restarts, each with a new watcher: nothing is booked again
        runtime = env.new_runtime()
        try:
            await runtime.watcher.step()
        finally:
            await runtime.close()
    env.chain.reorg(1)  # back to the mempool and mined again
    runtime = env.new_runtime()
    try:
        await runtime.watcher.step()
        await runtime.watcher.step()
    finally:
        await runtime.close()
    assert (await tiers(env))["hot_wallet"] - before["hot_wallet"] == 10_000
    assert len(await watcher_moves(env, txid)) == 2
    await assert_clean(env)


async def test_an_outsider_paying_a_sweeps_destination_is_booked_as_funding(env: Env):
    await fund(env, 500_000)
    async with env.sessions() as s:
        dest = (await s.execute(select(OnchainAddress).join(
            OnchainWallet, OnchainWallet.id == OnchainAddress.wallet_id).where(
            OnchainWallet.role == "hot", OnchainAddress.purpose == "sweep"))).scalar_one()
        count = (await s.execute(select(func.count()).select_from(OnchainPayment))
                 ).scalar_one()
    before = await tiers(env)
    txid = env.chain.pay(dest.address, 20_000)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await tiers(env))["hot_wallet"] - before["hot_wallet"] == 20_000
    assert len(await watcher_moves(env, txid)) == 2
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(OnchainPayment))
                ).scalar_one() == count + 1
    await assert_clean(env)


def test_the_migration_marks_earlier_outside_payments(tmp_path):
    """Recorded before the watcher decided it: a payment to a move address is someone else's
    when its transaction is no version of a move of ours and spent none of our coins."""
    import sqlite3

    from satvault.migrate import upgrade

    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url, "0044_coinbase_payments")
    db = sqlite3.connect(path)
    now = "2026-12-01 00:00:00"
    db.execute("INSERT INTO onchain_wallets VALUES ('w', 'hot', 'd', 'regtest', 20, 0, 0, ?)",
               (now,))
    for aid, purpose in ((1, "change"), (2, "deposit"), (3, "sweep")):
        db.execute("INSERT INTO onchain_addresses (id, wallet_id, chain, idx, address, "
                   "script_pubkey, status, purpose, ever_received, times_allocated) "
                   "VALUES (?, 'w', 1, ?, ?, ?, 'used', ?, 1, 1)",
                   (aid, aid, f"a{aid}", f"s{aid}", purpose))
    db.execute("INSERT INTO payout_batches (id, status, psbt, feerate_sat_vb, fee_sat, "
               "broadcast_attempts, created_at, updated_at) "
               "VALUES ('b', 'confirmed', 'p', 1, 1, 1, ?, ?)", (now, now))
    db.execute("INSERT INTO payout_txs (batch_id, txid, raw_tx, psbt, fee_sat, created_at) "
               "VALUES ('b', 'move', 'r', 'p', 1, ?)", (now,))
    payments = [("move", 1, None), ("seen_spending", 1, None), ("coin", 2, "seen_spending"),
                ("stranger", 1, None), ("stranger_sweep", 3, None), ("deposit", 2, None)]
    for txid, aid, spent_by in payments:
        db.execute("INSERT INTO onchain_payments (txid, vout, address_id, script_pubkey, "
                   "value_sat, status, required_confirmations, credit_state, spent_by, "
                   "first_seen_at, updated_at) VALUES (?, 0, ?, 's', 1000, 'mempool', 1, "
                   "'none', ?, ?, ?)", (txid, aid, spent_by, now, now))
    db.commit()
    db.close()
    upgrade(url)
    db = sqlite3.connect(path)
    marked = dict(db.execute("SELECT txid, paid_from_outside FROM onchain_payments").fetchall())
    db.close()
    assert marked == {"move": 0, "seen_spending": 0, "coin": 0, "stranger": 1,
                      "stranger_sweep": 1, "deposit": 0}
