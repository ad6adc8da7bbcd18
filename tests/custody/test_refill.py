"""A refill end to end on simnet: the semi-cold wallet under its floor raises one unsigned
PSBT for the cold cosigners; one signature moves nothing; two (satvault's offline signer and
embit's own, an independent implementation) complete it through `satvault cold import`; the
transaction that was asked for, and only it, is broadcast, confirmed and booked cold → semi-cold
once; withdrawals are then paid from it."""

from __future__ import annotations

import asyncio
import json

import pytest
from embit.psbt import PSBT
from sqlalchemy import select
from typer.testing import CliRunner

from satvault.cli import app
from satvault.config import reset_settings_cache
from satvault.custody.refill import accept_signed
from satvault.kernel.errors import InvalidInput
from satvault.onchain.models import ReviewItem
from satvault.onchain.service import allocate_address
from satvault.payouts.models import BatchStatus, MoveKind, PayoutBatch
from tests.chainenv import Env
from tests.custody.conftest import NETWORK, cold_descriptor, make_cosigners
from tests.custody.test_cold import cli_sign, embit_sign
from tests.custody.test_sweeps import tiers
from tests.payouts.test_payouts import external_address, received, withdraw

runner = CliRunner()
SAT = 1000


REFILL_SETTINGS: dict[str, object] = {
    "cold_descriptor": cold_descriptor(2, 3), "semicold_floor_sat": 200_000,
    "semicold_ceiling_sat": 2_000_000, "semicold_refill_to_sat": 500_000}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(REFILL_SETTINGS)


async def fund_cold(env: Env, sat: int) -> None:
    """The operator moves coins into cold storage from outside (credited to equity)."""
    async with env.sessions() as s, s.begin():
        a = await allocate_address(s, role="cold", owner_type="platform", owner_id="cold",
                                   purpose="funding", request_id=None)
    env.chain.pay(a.address, sat)
    env.chain.mine(1)
    await env.runtime.watcher.step()


async def cli(*args: str) -> tuple[int, dict]:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def cli_env(env: Env, db_url, tmp_path, monkeypatch):
    for name, value in (("SATVAULT_DATABASE_URL", db_url), ("SATVAULT_NETWORK", NETWORK),
                        ("SATVAULT_HOME", str(tmp_path)),
                        ("SATVAULT_COLD_DESCRIPTOR", env.settings.cold_descriptor)):
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    yield tmp_path
    reset_settings_cache()


async def test_a_refill_signed_by_two_cosigners_is_broadcast_and_booked_once(env: Env, cli_env):
    await fund_cold(env, 1_000_000)
    decision = await env.runtime.refills.step()
    assert decision.batch_id and decision.amount_sat == 500_000
    assert "in progress" in (await env.runtime.refills.step()).reason  # one at a time
    batch_id = decision.batch_id
    async with env.sessions() as s:
        item = (await s.execute(select(ReviewItem).where(
            ReviewItem.kind == "refill_needs_cosigners"))).scalar_one()
    assert item.subject == batch_id and "satvault cold export" in item.details
    async with env.sessions() as s:
        stored = PSBT.from_string((await s.get(PayoutBatch, batch_id)).psbt)  # type: ignore[union-attr]
    for scope in stored.inputs:  # the previous transaction, as hardware cosigners want it
        hit = env.chain.find_tx(bytes(scope.txid).hex())
        assert hit is not None and scope.non_witness_utxo is not None
        assert bytes(scope.non_witness_utxo.txid()) == bytes(scope.txid)
        assert scope.non_witness_utxo.vout[scope.vout].value == scope.witness_utxo.value
    # Nothing moves while the cosigners have not signed: the payout job leaves it alone.
    report = await env.runtime.payouts.advance()
    assert report.signed == report.broadcast == 0

    code, out = await cli("cold", "export", batch_id, "--out", str(cli_env / "out"))
    assert code == 0, out
    exported = (cli_env / "out" / f"refill-{batch_id}.psbt").read_text().strip()
    a, b, _ = make_cosigners(3)
    (cli_env / "a.psbt").write_text(cli_sign(cli_env, exported, a))
    (cli_env / "b.psbt").write_text(embit_sign(exported, b))

    code, out = await cli("cold", "import", str(cli_env / "a.psbt"))
    assert code == 0 and not out["complete"], out
    async with env.sessions() as s:
        assert (await s.get(PayoutBatch, batch_id)).status is BatchStatus.COSIGNING  # type: ignore[union-attr]
    code, out = await cli("cold", "import", str(cli_env / "b.psbt"))
    assert code == 0 and out["complete"], out
    async with env.sessions() as s:
        batch = await s.get(PayoutBatch, batch_id)
        assert batch is not None and batch.status is BatchStatus.SIGNED
        assert (await s.get(ReviewItem, item.id)).resolved_at is not None  # type: ignore[union-attr]

    report = await env.runtime.payouts.advance()
    assert report.broadcast == 1
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1
    assert (await env.runtime.payouts.advance()).confirmed == 0  # booked once
    fee = batch.fee_sat
    assert await tiers(env) == {"deposit_wallet": 0, "hot_wallet": 500_000,
                                "cold_wallet": 1_000_000 - 500_000 - fee, "network_fees": fee}
    # Semi-cold is over its floor again: no new refill; and its coins pay withdrawals.
    assert "not under its floor" in (await env.runtime.refills.step()).reason
    await env.check()


async def test_a_refill_of_other_bytes_or_another_batch_is_refused(env: Env):
    await fund_cold(env, 1_000_000)
    decision = await env.runtime.refills.step()
    assert decision.batch_id
    async with env.sessions() as s, s.begin():
        batch = await s.get(PayoutBatch, decision.batch_id)
        assert batch is not None and batch.kind is MoveKind.REFILL
        other = PSBT.from_string(batch.psbt).tx
        other.vout[0].value += 1_000  # one output paying more than was asked
        other_txid = bytes(other.txid()).hex()
        with pytest.raises(InvalidInput, match="inputs or outputs differ"):
            await accept_signed(s, batch.id, other.serialize().hex(), other_txid, "")
        with pytest.raises(InvalidInput, match="not a readable transaction"):
            await accept_signed(s, batch.id, "zz", "00" * 32, "")
    async with env.sessions() as s:
        assert (await s.get(PayoutBatch, decision.batch_id)).status is BatchStatus.COSIGNING  # type: ignore[union-attr]


async def test_refill_then_pay_a_withdrawal_from_it(env: Env, cli_env):
    await fund_cold(env, 2_000_000)
    from tests.custody.test_sweeps import deposit

    await deposit(env, 300_000)  # the customer's money; it stays in the deposit tier
    decision = await env.runtime.refills.step()
    code, _ = await cli("cold", "export", decision.batch_id or "", "--out", str(cli_env / "o"))
    exported = (cli_env / "o" / f"refill-{decision.batch_id}.psbt").read_text().strip()
    a, _, c = make_cosigners(3)
    signed = [embit_sign(exported, a), embit_sign(exported, c)]
    for k, text in enumerate(signed):
        (cli_env / f"{k}.psbt").write_text(text)
    code, out = await cli("cold", "import", str(cli_env / "0.psbt"), str(cli_env / "1.psbt"))
    assert code == 0 and out["complete"], out
    await env.runtime.payouts.advance()
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.advance()
    dest = external_address(env, 7)
    await withdraw(env, dest, 150_000)
    report = await env.runtime.payouts.step()
    assert report.batched == 1 and report.broadcast == 1
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    assert await received(env, dest) == 150_000
    await env.check()


async def test_a_refill_stored_without_previous_transactions_gets_them_and_is_signed(
        env: Env, cli_env):
    """A refill raised before PSBTs carried each input's previous transaction, still waiting
    for the cosigners when satvault is upgraded: the cosigners now refuse its inputs. `cold
    export` says so and what to do; the refill planner's next pass adds them (the
    transaction unchanged), and the refill is then signed through `satvault cold sign`,
    imported and broadcast like any other."""
    await fund_cold(env, 1_000_000)
    batch_id = (await env.runtime.refills.step()).batch_id
    assert batch_id
    async with env.sessions() as s, s.begin():
        batch = await s.get(PayoutBatch, batch_id)
        assert batch is not None
        old = PSBT.from_string(batch.psbt)
        for scope in old.inputs:  # as an earlier satvault stored it
            scope.non_witness_utxo = None
        batch.psbt = str(old.to_base64())
    code, out = await cli("cold", "export", batch_id, "--out", str(cli_env / "out"))
    assert code == 1 and "previous transaction" in out["error"], out
    assert "next pass" in out["error"] and not (cli_env / "out").exists()

    assert "in progress" in (await env.runtime.refills.step()).reason
    async with env.sessions() as s:
        batch = await s.get(PayoutBatch, batch_id)
        assert batch is not None and batch.status is BatchStatus.COSIGNING
        now = PSBT.from_string(batch.psbt)
    assert now.tx.serialize() == old.tx.serialize()
    assert all(scope.non_witness_utxo is not None for scope in now.inputs)
    code, out = await cli("cold", "export", batch_id, "--out", str(cli_env / "out"))
    assert code == 0, out
    exported = (cli_env / "out" / f"refill-{batch_id}.psbt").read_text().strip()
    a, _, c = make_cosigners(3)
    for who in (a, c):
        (cli_env / f"{who.name}.psbt").write_text(cli_sign(cli_env, exported, who))
    code, out = await cli("cold", "import", str(cli_env / "a.psbt"), str(cli_env / "c.psbt"))
    assert code == 0 and out["complete"], out
    assert (await env.runtime.payouts.advance()).broadcast == 1
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1
    await env.check()
