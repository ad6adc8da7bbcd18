"""Withdrawals end to end against simnet: hold, batching, signing, broadcast, confirmation,
posting; signer refusals; UNKNOWN broadcasts that must never refund; crash recovery; fee bumps."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from satvault.backends.errors import BackendUnavailable
from satvault.ledger.errors import InsufficientFunds
from satvault.onchain.deposits import create_deposit
from satvault.onchain.errors import InvalidAddress, WrongNetwork
from satvault.payouts.errors import InvalidWithdrawal
from satvault.payouts.models import PayoutBatch, PayoutTx, Withdrawal
from satvault.payouts.service import request_withdrawal
from tests.chainenv import Env

SAT = 1000
RESERVE = 5_000
# Payouts only: the sweeps that fund the semi-cold wallet are batches too.
PAYOUTS = select(PayoutBatch).where(PayoutBatch.kind == "payout")
PAYOUT_BATCHES = select(func.count()).select_from(PayoutBatch).where(PayoutBatch.kind == "payout")
PAYOUT_VERSIONS = select(func.count()).select_from(PayoutTx).join(PayoutBatch).where(
    PayoutBatch.kind == "payout")


async def fund(env: Env, sat: int) -> None:
    """Credit ``sat`` to the user through a deposit, and sweep it to the semi-cold wallet that
    pays withdrawals (payouts never spend deposit coins)."""
    async with env.sessions() as s, s.begin():
        d = await create_deposit(s, wallet=env.wallet, settings=env.settings)
    env.chain.pay(d.address, sat)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.balances())["available"] == sat * SAT
    await env.sweep()


async def add_coin(env: Env, sat: int) -> None:
    """One more confirmed coin in the wallet that pays withdrawals (a deposit, swept)."""
    async with env.sessions() as s, s.begin():
        d = await create_deposit(s, wallet=env.wallet, settings=env.settings)
    env.chain.pay(d.address, sat)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.sweep()


async def withdraw(env: Env, address: str, sat: int) -> Withdrawal:
    async with env.sessions() as s, s.begin():
        return await request_withdrawal(s, wallet=env.wallet, destination=address,
                                        amount_msat=sat * SAT, settings=env.settings)


def external_address(env: Env, i: int) -> str:
    from satvault.signer.core import HotSigner

    other = HotSigner(bytes([i + 1]) * 64, "regtest")
    from satvault.onchain.descriptors import parse_wallet

    return parse_wallet(other.descriptors()["deposit"], "regtest").derive(0).address


async def received(env: Env, address: str) -> int:
    """Confirmed sats paid to ``address`` by our payout transactions, read from the node over
    its RPC (a payout that confirmed twice, e.g. original and replacement, would count twice)."""
    from satvault.onchain.addresses import parse_address

    spk = parse_address(address, "regtest").script_pubkey
    async with env.sessions() as s:
        txids = (await s.execute(select(PayoutTx.txid).join(PayoutBatch).where(
            PayoutBatch.kind == "payout"))).scalars().all()
    total = 0
    for txid in txids:
        status = await env.runtime.backend.transaction(txid)
        if status is not None and status.confirmations > 0:
            total += sum(o.value_sat for o in status.tx.outputs if o.script_pubkey == spk)
    return total


async def test_three_withdrawals_batched_confirmed_and_posted(env: Env):
    await fund(env, 1_000_000)
    dests = [external_address(env, i) for i in range(3)]
    for i, a in enumerate(dests):
        await withdraw(env, a, 100_000 + i)
    held = (100_000 + 100_001 + 100_002 + 3 * RESERVE) * SAT
    assert (await env.balances())["held"] == held
    report = await env.runtime.payouts.step()
    assert report.batched == 3 and report.signed == 1 and report.broadcast == 1
    async with env.sessions() as s:
        batches = (await s.execute(PAYOUTS)).scalars().all()
        txids = {w.txid for w in (await s.execute(select(Withdrawal))).scalars()}
    assert len(batches) == 1 and txids == {batches[0].txid}
    env.chain.mine(1)
    await env.runtime.watcher.step()
    report = await env.runtime.payouts.step()
    assert report.confirmed == 1
    for i, a in enumerate(dests):
        assert await received(env, a) == 100_000 + i
    async with env.sessions() as s:
        rows = (await s.execute(select(Withdrawal).order_by(Withdrawal.created_at))).scalars()
        fees = [w.fee_msat for w in rows]
        batch = (await s.execute(PAYOUTS)).scalar_one()
    assert sum(fees) == batch.fee_sat * SAT and all(0 < f <= RESERVE * SAT for f in fees)
    b = await env.balances()
    assert b["held"] == 0
    assert b["available"] == (1_000_000 - 300_003) * SAT - sum(fees)
    await env.runtime.payouts.step()  # nothing more happens
    await env.check()


async def test_bad_withdrawals_hold_nothing(env: Env):
    await fund(env, 50_000)
    good = external_address(env, 0)
    cases = [
        ("not-an-address", 10_000 * SAT, InvalidAddress),
        ("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", 10_000 * SAT, WrongNetwork),
        (good, 100 * SAT, InvalidWithdrawal),  # dust
        (good, 10_000 * SAT + 1, InvalidWithdrawal),  # not whole satoshis
        (good, -5, InvalidWithdrawal),
        (good, 60_000 * SAT, InsufficientFunds),
        (f"bitcoin:{good}?amount=abc", None, Exception),
    ]
    for dest, amount, exc in cases:
        with pytest.raises(exc):
            async with env.sessions() as s, s.begin():
                await request_withdrawal(s, wallet=env.wallet, destination=dest,
                                         amount_msat=amount, settings=env.settings)
    assert (await env.balances())["held"] == 0
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Withdrawal))).scalar() == 0
    await env.check()


async def test_signer_refuses_an_altered_psbt(env: Env):
    from embit.psbt import PSBT

    await fund(env, 500_000)
    await withdraw(env, external_address(env, 0), 100_000)
    job = env.runtime.payouts
    assert await job.create_batch() == 1
    # Tamper with the stored, not yet signed PSBT: the payment output now pays more.
    async with env.sessions() as s, s.begin():
        batch = (await s.execute(PAYOUTS)).scalar_one()
        psbt = PSBT.from_string(batch.psbt)
        psbt.outputs[0].value += 50_000  # (OutputScope.vout is a fresh copy)
        batch.psbt = psbt.to_string()
    report = await job.advance()
    assert report.stuck == 1 and report.broadcast == 0
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
        assert (await s.execute(PAYOUT_VERSIONS)).scalar() == 0
    assert batch.status == "stuck" and "150000 sat" in (batch.last_error or "")
    assert (await env.balances())["held"] == (100_000 + RESERVE) * SAT  # never released
    await env.check()


class FlakyBroadcast:
    """Wraps the adapter: the first broadcast reaches the node, then 'times out'."""

    def __init__(self, inner, mode: str = "timeout") -> None:
        self.inner, self.mode, self.calls = inner, mode, 0
        self.name = inner.name

    def __getattr__(self, item):
        return getattr(self.inner, item)

    async def broadcast(self, raw_hex: str) -> str:
        self.calls += 1
        if self.calls == 1:
            await self.inner.broadcast(raw_hex)
            if self.mode == "timeout":
                raise BackendUnavailable("read timeout after sending")
            raise Crash("killed after the node accepted it")
        return await self.inner.broadcast(raw_hex)


class Crash(BaseException):
    pass


async def test_broadcast_timeout_then_confirmation_pays_once_never_refunds(env: Env):
    await fund(env, 500_000)
    dest = external_address(env, 0)
    await withdraw(env, dest, 200_000)
    env.runtime.payouts.backend = FlakyBroadcast(env.runtime.backend)
    report = await env.runtime.payouts.step()
    assert report.errors and report.broadcast == 0
    assert (await env.balances())["held"] == (200_000 + RESERVE) * SAT  # UNKNOWN: still held
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    await env.runtime.payouts.step()
    assert await received(env, dest) == 200_000
    async with env.sessions() as s:
        assert (await s.execute(PAYOUT_VERSIONS)).scalar() == 1
        w = (await s.execute(select(Withdrawal))).scalar_one()
    assert w.status == "confirmed"
    assert (await env.balances())["held"] == 0
    await env.check()


async def test_killed_between_signing_and_broadcast_pays_once_after_restart(env: Env):
    await fund(env, 500_000)
    dest = external_address(env, 0)
    await withdraw(env, dest, 150_000)
    env.runtime.payouts.backend = FlakyBroadcast(env.runtime.backend, mode="crash")
    with pytest.raises(Crash):
        await env.runtime.payouts.step()
    restarted = env.new_runtime()
    try:
        await restarted.payouts.step()
        env.chain.mine(1)
        await restarted.watcher.step()
        await restarted.payouts.step()
        await restarted.payouts.step()
    finally:
        await restarted.close()
    assert await received(env, dest) == 150_000
    async with env.sessions() as s:
        assert (await s.execute(PAYOUT_VERSIONS)).scalar() == 1
        assert (await s.execute(PAYOUT_BATCHES)).scalar() == 1
    await env.check()


async def test_fee_bump_replaces_and_confirms_once(env: Env):
    await fund(env, 500_000)
    dest = external_address(env, 0)
    await withdraw(env, dest, 120_000)
    await env.runtime.payouts.step()
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    first = batch.txid
    new_txid = await env.runtime.payouts.bump_fee(batch.id, batch.feerate_sat_vb + 10)
    assert new_txid != first
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
        w = (await s.execute(select(Withdrawal))).scalar_one()
    assert batch.status == "confirmed" and batch.txid == new_txid == w.txid
    assert await received(env, dest) == 120_000
    await env.check()


async def test_100_concurrent_withdrawals_never_overdraw(env: Env):
    await fund(env, 1_000_000)
    dest = external_address(env, 0)

    from satvault.kernel.retrying import retrying

    async def attempt() -> bool:
        try:
            return await retrying(env.sessions, lambda s: request_withdrawal(
                s, wallet=env.wallet, destination=dest, amount_msat=45_000 * SAT,
                settings=env.settings)) is not None
        except InsufficientFunds:
            return False

    ok = await asyncio.gather(*(attempt() for _ in range(100)))
    assert sum(ok) == 1_000_000 // (45_000 + RESERVE)
    b = await env.balances()
    assert b["available"] >= 0 and b["held"] == sum(ok) * (45_000 + RESERVE) * SAT
    await env.check()


async def test_fee_bump_policy_replaces_a_stuck_payout(env: Env):
    env.settings.payout_bump_after_blocks = 3
    await fund(env, 500_000)
    dest = external_address(env, 0)
    await withdraw(env, dest, 90_000)
    await env.runtime.payouts.step()
    async with env.sessions() as s, s.begin():
        batch = (await s.execute(PAYOUTS)).scalar_one()
        first_txid, first_rate = batch.txid, batch.feerate_sat_vb
        batch.broadcast_height -= 3  # as if it had waited three blocks in a full mempool
    report = await env.runtime.payouts.step()
    assert report.confirmed == 0
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
        versions = (await s.execute(PAYOUT_VERSIONS)).scalar()
    assert versions == 2 and batch.txid != first_txid
    assert batch.feerate_sat_vb == -(-first_rate * 150 // 100)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    assert await received(env, dest) == 90_000  # the replacement paid; the original never did
    assert (await env.balances())["held"] == 0
    await env.check()


async def test_the_fee_bump_policy_keeps_the_platforms_share_within_its_limit(env: Env):
    """Found from outside: the automatic bump (+1000 % after each block) took a 1,000 sat
    withdrawal's fee from 282 to 70,500 sat, 65,500 of them the platform's, where a new
    batch refuses to make the platform pay more than ``payout_max_fee_excess_sat`` above
    the reserves held. The bump stops at that limit, and does not bump once it is there."""
    env.settings.payout_bump_after_blocks = 1
    env.settings.payout_bump_percent = 1000
    env.settings.payout_max_fee_excess_sat = 2_000
    await fund(env, 500_000)
    await withdraw(env, external_address(env, 0), 1_000)
    await env.runtime.payouts.step()
    fees = []
    for _ in range(4):
        async with env.sessions() as s, s.begin():
            batch = (await s.execute(PAYOUTS)).scalar_one()
            fees.append(batch.fee_sat)
            batch.broadcast_height -= 1  # as if it had waited a block in a full mempool
        await env.runtime.payouts.step()
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
        reserves = sum(w.fee_reserve_msat for w in (await s.execute(
            select(Withdrawal).where(Withdrawal.batch_id == batch.id))).scalars()) // 1000
    fees.append(batch.fee_sat)
    assert fees[1] > fees[0], fees  # it was bumped
    assert max(fees) <= reserves + 2_000, (fees, reserves)
    assert fees[-1] == fees[-2], fees  # at the limit: no further bump
    await env.check()


async def test_operator_funded_hot_wallet_pays_withdrawals(env: Env):
    from satvault.ledger.platform import ensure_platform_accounts
    from satvault.ledger.store import get_account
    from satvault.onchain.service import allocate_address

    async with env.sessions() as s, s.begin():
        hot = await allocate_address(s, role="hot", owner_type="platform", owner_id="hot",
                                     purpose="funding", request_id=None)
    env.chain.pay(hot.address, 2_000_000)  # the operator tops up the hot wallet
    env.chain.mine(1)
    await env.runtime.watcher.step()
    async with env.sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        equity = await get_account(s, platform.equity.id)
    assert equity.balances.credits_posted == 2_000_000 * SAT
    # A customer credited off-chain (say, an internal transfer) withdraws on-chain: the coins
    # come from the hot wallet, as no deposit of theirs exists.
    from satvault.ledger.core import TransferSpec
    from satvault.ledger.store import submit_one

    await submit_one(env.sessions, TransferSpec("gift", platform.equity.id,
                                                env.wallet.ledger_account_id, 300_000 * SAT,
                                                "BTC"))
    dest = external_address(env, 3)
    await withdraw(env, dest, 250_000)
    await env.runtime.payouts.step()
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    assert await received(env, dest) == 250_000
    await env.check()


async def test_refused_fee_bump_keeps_the_live_payout(env: Env):
    from satvault.payouts.errors import CannotBumpFee

    await fund(env, 500_000)
    dest = external_address(env, 6)
    await withdraw(env, dest, 100_000)
    await env.runtime.payouts.step()
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    with pytest.raises(CannotBumpFee, match="maximum"):
        await env.runtime.payouts.bump_fee(batch.id, env.settings.max_feerate_sat_vb + 1)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    assert batch.status == "confirmed" and (await env.balances())["held"] == 0
    await env.check()


async def test_a_payout_sent_once_is_never_paid_again_when_its_rebroadcast_is_refused(
        env: Env):
    """Found from outside: a payout our node accepted (and relayed) was later dropped by it
    (a reorg), and its rebroadcast refused (the node's relay floor rose). Giving it up and
    batching the withdrawal again paid it from another coin while the first version, still in
    other nodes' mempools, could confirm too: paid twice. It is kept instead (tracked, a person
    told); when the first version confirms it is booked once."""
    from dataclasses import replace

    from satvault.onchain.models import ReviewItem

    for sat in (600_000, 900_000):  # two coins: the withdrawal could be paid from either
        await add_coin(env, sat)
    dest = external_address(env, 8)
    wd = await withdraw(env, dest, 100_000)
    assert (await env.runtime.payouts.step()).broadcast == 1
    async with env.sessions() as s:
        first = (await s.execute(select(PayoutTx).join(PayoutBatch).where(
            PayoutBatch.kind == "payout"))).scalar_one()
    await env.runtime.watcher.step()  # seen in the mempool: it was relayed
    env.chain.reorg(1, drop_txids=[first.txid])  # our node loses it
    policy = env.chain.policy
    env.chain.policy = replace(policy, min_relay_sat_kvb=50_000)  # and its relay floor rises
    await env.runtime.watcher.step()
    for _ in range(2):  # refused at every pass: kept, never batched again
        report = await env.runtime.payouts.step()
        assert (report.abandoned, report.batched) == (0, 0), report
        assert report.held >= 1, report
    async with env.sessions() as s:
        assert (await s.execute(PAYOUT_BATCHES)).scalar() == 1
        batch = (await s.execute(PAYOUTS)).scalar_one()
        w = await s.get(Withdrawal, wd.id)
        told = (await s.execute(select(func.count()).select_from(ReviewItem).where(
            ReviewItem.kind == "payout_rejected"))).scalar()
    assert (batch.status, w.status, told) == ("broadcast", "broadcast", 1)
    assert (await env.balances())["held"] == (100_000 + RESERVE) * SAT
    # A peer that relayed the first version broadcasts it again; it confirms, booked once.
    env.chain.policy = policy
    await env.runtime.backend.broadcast(first.raw_tx)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    assert await received(env, dest) == 100_000
    async with env.sessions() as s:
        assert (await s.get(Withdrawal, wd.id)).status == "confirmed"
    assert (await env.balances())["held"] == 0
    await env.check()


def answer_lost_once(upstream: str, status: int, body: bytes) -> object:
    """A gateway in front of the node (ASGI, served over HTTP): it forwards every JSON-RPC
    call, but the node's answer to the first ``sendrawtransaction`` is replaced by
    ``status`` with ``body`` (an HTML error page of a proxy or load balancer)."""
    import httpx

    lost: list[bool] = []

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        request, more = b"", True
        while more:
            message = await receive()
            request += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]
                   if k in (b"authorization", b"content-type")}
        async with httpx.AsyncClient() as client:
            reply = await client.post(upstream, content=request, headers=headers)
        code, out, kind = reply.status_code, reply.content, b"application/json"
        if b'"sendrawtransaction"' in request and not lost:
            lost.append(True)
            code, out, kind = status, body, b"text/html"
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": out})

    return app


@pytest.mark.parametrize(("status", "body"), [
    (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    (500, b"<html>Internal Server Error</html>"),
    (200, b"<html>maintenance</html>")])  # not even an error status
async def test_a_broadcast_whose_answer_is_lost_is_never_paid_again(env: Env, status, body):
    """Found from outside: only a timeout or an HTTP 503 from the node counted as "the
    broadcast may have reached it". An answer lost as a gateway's HTML error page raised past
    the payout job, which noted no attempt; when the node later forgot the transaction and
    refused it again, the batch was given up and its withdrawal paid a second time from
    another coin, while the first transaction confirmed too. Any answer but the node's own
    refusal is "unknown" now, and a payout sent once is never given up."""
    from dataclasses import replace

    from satvault.backends.bitcoind import BitcoindBackend
    from tests.liveserver import serve

    for sat in (600_000, 900_000):  # two coins: the withdrawal could be paid from either
        await add_coin(env, sat)
    dest = external_address(env, 9)
    wd = await withdraw(env, dest, 100_000)
    job = env.runtime.payouts
    direct = job.backend
    async with serve(answer_lost_once(env.server.base_url, status, body)) as gateway:
        host = gateway.removeprefix("http://")
        job.backend = BitcoindBackend(f"http://{env.server.user}:{env.server.password}@{host}/",
                                      retries=0)
        try:
            report = await job.step()
        finally:
            await job.backend.close()
            job.backend = direct
    assert report.broadcast == 0 and report.errors, report  # the outcome is unknown
    async with env.sessions() as s:
        first = (await s.execute(select(PayoutTx).join(PayoutBatch).where(
            PayoutBatch.kind == "payout"))).scalar_one()
        batch = (await s.execute(PAYOUTS)).scalar_one()
    assert batch.broadcast_attempts == 1 and "unknown" in (batch.last_error or "")
    assert first.txid in env.chain.mempool  # it reached the node all the same
    await env.runtime.watcher.step()
    env.chain.reorg(1, drop_txids=[first.txid])  # our node loses it
    policy = env.chain.policy
    env.chain.policy = replace(policy, min_relay_sat_kvb=50_000)  # and refuses it again
    for _ in range(2):
        report = await job.step()
        assert (report.abandoned, report.batched) == (0, 0), report
    async with env.sessions() as s:
        assert (await s.execute(PAYOUT_BATCHES)).scalar() == 1  # kept, never batched again
        assert (await s.execute(PAYOUTS)).scalar_one().status == "broadcast"
        assert (await s.get(Withdrawal, wd.id)).status == "batched"  # not back to pending
    # A peer relays the first transaction again; it confirms and is booked, once.
    env.chain.policy = policy
    await env.runtime.backend.broadcast(first.raw_tx)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await job.step()
    assert await received(env, dest) == 100_000
    async with env.sessions() as s:
        assert (await s.get(Withdrawal, wd.id)).status == "confirmed"
    assert (await env.balances())["held"] == 0
    await env.check()


async def test_the_payout_job_warns_once_at_start_against_a_node_without_txindex(env: Env):
    """bitcoind without -txindex never shows a confirmed payout by its txid, so payouts are
    never seen to confirm. The job cannot fix that; it says so, once, when it starts."""
    from structlog.testing import capture_logs

    from satvault.backends.bitcoind import BitcoindBackend

    def told(logs: list[dict]) -> list[dict]:
        return [e for e in logs if e["event"] == "node_without_txindex"]

    node = BitcoindBackend(env.server.url, retries=0)
    fresh = env.new_runtime()  # a restart, against the same node
    try:
        with capture_logs() as logs:
            await env.runtime.payouts.step()
        assert told(logs) == []  # the simulator, like a well-set node, keeps the index
        await node.call("simnet_settxindex", False)
        with capture_logs() as logs:
            await fresh.payouts.step()
            await fresh.payouts.step()
        [warning] = told(logs)
        assert warning["log_level"] == "warning" and "-txindex=1" in warning["action"]
    finally:
        await node.close()
        await fresh.close()
    await env.check()
