"""Every input of a payout, sweep or fee bump carries its previous transaction
(``non_witness_utxo``), taken from our own moves' records or from the node, fetched with no
database transaction open; the signer refuses a PSBT whose input amounts disagree with them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from embit.psbt import PSBT
from embit.transaction import Transaction, TransactionOutput
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from satvault.onchain.deposits import create_deposit
from satvault.payouts.models import PayoutBatch
from tests.chainenv import Env
from tests.payouts.test_payouts import (
    PAYOUT_VERSIONS,
    PAYOUTS,
    RESERVE,
    SAT,
    external_address,
    fund,
    withdraw,
)

SWEEPS = select(PayoutBatch).where(PayoutBatch.kind == "sweep")


def count_fetches(env: Env, engine: AsyncEngine) -> list[str]:
    """The txids the job asks the node for; each call checks that no database connection is
    held meanwhile (no transaction open, no lock held across the network)."""
    backend = env.runtime.backend
    inner: Callable[[str], Awaitable[bytes | None]] = backend.raw_transaction
    asked: list[str] = []

    async def raw_transaction(txid: str) -> bytes | None:
        assert engine.sync_engine.pool.checkedout() == 0, "a connection is held"
        asked.append(txid)
        return await inner(txid)

    backend.raw_transaction = raw_transaction  # type: ignore[method-assign]
    return asked


def chain_tx(env: Env, txid: str) -> Transaction:
    hit = env.chain.find_tx(txid)
    assert hit is not None
    return Transaction.parse(bytes.fromhex(hit[0].hex))


def assert_carries_prev_txs(env: Env, psbt_b64: str) -> None:
    psbt = PSBT.from_string(psbt_b64)
    for scope in psbt.inputs:
        prev = scope.non_witness_utxo
        assert prev is not None
        txid = bytes(scope.txid).hex()
        assert bytes(prev.txid()).hex() == txid
        real = chain_tx(env, txid).vout[scope.vout]
        assert (prev.vout[scope.vout].value, prev.vout[scope.vout].script_pubkey.data) == \
            (real.value, real.script_pubkey.data)
        assert scope.witness_utxo.value == real.value


async def test_sweep_and_payout_psbts_carry_previous_transactions(env: Env,
                                                                  engine: AsyncEngine):
    """Two deposits paid by one transaction: the sweep fetches it once, from the node. The
    payout spends the sweep's output, whose transaction is ours: no fetch at all."""
    asked = count_fetches(env, engine)
    async with env.sessions() as s, s.begin():
        a = await create_deposit(s, wallet=env.wallet, settings=env.settings)
        b = await create_deposit(s, wallet=env.wallet, settings=env.settings)
    funding = env.chain.pay_many([(a.address, 300_000), (b.address, 200_000)])
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.sweep()
    assert asked == [funding]
    async with env.sessions() as s:
        sweep = (await s.execute(SWEEPS)).scalar_one()
    assert len(PSBT.from_string(sweep.psbt).inputs) == 2
    assert_carries_prev_txs(env, sweep.psbt)

    await withdraw(env, external_address(env, 0), 100_000)
    report = await env.runtime.payouts.step()
    assert report.batched == 1 and report.broadcast == 1, report
    async with env.sessions() as s:
        payout = (await s.execute(PAYOUTS)).scalar_one()
    assert_carries_prev_txs(env, payout.psbt)
    assert asked == [funding]  # the sweep's transaction came from payout_txs
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    await env.check()


async def test_a_lying_input_amount_is_refused_and_nothing_is_signed(env: Env,
                                                                    tmp_path: Path):
    """The stored PSBT is altered (a compromised database, a bug): input 0 claims 3,000 sat
    more than it holds, so the fee looks 3,000 sat larger, well inside the limits. The signer
    reads the amount from the previous transaction and refuses; the batch is stuck."""
    await fund(env, 500_000)
    await withdraw(env, external_address(env, 0), 100_000)
    job = env.runtime.payouts
    assert await job.create_batch() == 1
    async with env.sessions() as s, s.begin():
        batch = (await s.execute(PAYOUTS)).scalar_one()
        psbt = PSBT.from_string(batch.psbt)
        utxo = psbt.inputs[0].witness_utxo
        psbt.inputs[0].witness_utxo = TransactionOutput(utxo.value + 3_000, utxo.script_pubkey)
        batch.psbt = psbt.to_string()
    report = await job.advance()
    assert report.stuck == 1 and report.signed == 0 and report.broadcast == 0
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
        assert (await s.execute(PAYOUT_VERSIONS)).scalar() == 0
    assert batch.status == "stuck" and "non_witness_utxo" in (batch.last_error or "")
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    payout_lines = [x for x in lines if x.get("txid") == PSBT.from_string(
        batch.psbt).tx.txid().hex()]
    assert [x["event"] for x in payout_lines] == ["refused"]
    assert payout_lines[0]["error_type"] == "InvalidPsbt"
    assert (await env.balances())["held"] == (100_000 + RESERVE) * SAT  # never released
    await env.check()


async def test_a_batch_stored_without_previous_transactions_gets_them_before_signing(
        env: Env, engine: AsyncEngine):
    """A batch stored by an earlier version (no ``non_witness_utxo``): the job fills them in
    before it asks the signer, and the transaction is the one stored."""
    await fund(env, 500_000)
    await withdraw(env, external_address(env, 0), 100_000)
    job = env.runtime.payouts
    assert await job.create_batch() == 1
    async with env.sessions() as s, s.begin():
        batch = (await s.execute(PAYOUTS)).scalar_one()
        psbt = PSBT.from_string(batch.psbt)
        for scope in psbt.inputs:
            scope.non_witness_utxo = None
        batch.psbt = psbt.to_string()
        unsigned_txid = psbt.tx.txid().hex()
    asked = count_fetches(env, engine)
    report = await job.advance()
    assert report.signed == 1 and report.broadcast == 1, report
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    assert batch.txid == unsigned_txid
    assert asked == []  # the sweep's transaction is ours
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await job.step()).confirmed == 1
    await env.check()


async def test_a_fee_bump_carries_previous_transactions(env: Env):
    await fund(env, 500_000)
    await withdraw(env, external_address(env, 0), 100_000)
    job = env.runtime.payouts
    report = await job.step()
    assert report.broadcast == 1
    async with env.sessions() as s:
        batch_id = (await s.execute(PAYOUTS)).scalar_one().id
    new_txid = await job.bump_fee(batch_id, 20)
    async with env.sessions() as s:
        batch = (await s.execute(PAYOUTS)).scalar_one()
    assert batch.txid == new_txid
    hit = env.chain.find_tx(new_txid)
    assert hit is not None  # the node took the replacement
    from satvault.payouts.models import PayoutTx

    async with env.sessions() as s:
        version = (await s.execute(select(PayoutTx).where(PayoutTx.txid == new_txid))
                   ).scalar_one()
    assert_carries_prev_txs(env, version.psbt)


async def test_a_sweep_carries_no_more_previous_transactions_than_its_budget(
        env: Env, monkeypatch):
    """Deposits paid by large transactions could make a sweep's PSBT longer than a signer
    request may be: the sweep takes the oldest coins whose previous transactions fit, the
    next sweep the rest."""
    from satvault.custody import sweeps

    async with env.sessions() as s, s.begin():
        addresses = [(await create_deposit(s, wallet=env.wallet, settings=env.settings)).address
                     for _ in range(3)]
    txids = [env.chain.pay(a, 100_000) for a in addresses]
    env.chain.mine(1)
    await env.runtime.watcher.step()
    sizes = [len(bytes.fromhex(env.chain.find_tx(t)[0].hex)) for t in txids]  # type: ignore[index]
    monkeypatch.setattr(sweeps, "PREV_TX_BUDGET", sizes[0] + sizes[1])
    await env.sweep()
    async with env.sessions() as s:
        first = (await s.execute(SWEEPS)).scalar_one()
    assert {bytes(i.txid).hex() for i in PSBT.from_string(first.psbt).inputs} == set(txids[:2])
    await env.sweep()
    async with env.sessions() as s:
        second = (await s.execute(SWEEPS.where(PayoutBatch.id != first.id))).scalar_one()
    assert [bytes(i.txid).hex() for i in PSBT.from_string(second.psbt).inputs] == [txids[2]]
    await env.check()


def test_the_budget_keeps_at_least_one_coin():
    from satvault.custody.sweeps import within_psbt_budget

    assert within_psbt_budget([5, 3, 4], lambda n: n, 8) == [5, 3]
    assert within_psbt_budget([9, 1], lambda n: n, 8) == [9]
    assert within_psbt_budget([], lambda n: n, 8) == []
