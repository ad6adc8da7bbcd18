"""The audit chain's head anchored on chain in a sweep, end to end on simnet and both
databases: requested (``satvault audit anchor --onchain``) or automatic, carried by the next
sweep as a zero-value ``SVA1`` ``OP_RETURN`` whose bytes the fee pays for, booked without a
sat out of place, confirmed (txid, block), then checked by ``satvault audit verify-anchor``
against the chain: a row changed behind the triggers is named, a chain rewritten and
re-hashed (which ``audit verify`` alone cannot see) is caught."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from embit.psbt import PSBT
from embit.transaction import Transaction
from sqlalchemy import select
from typer.testing import CliRunner

from satvault.audit import AuditEvent
from satvault.audit.chain import GENESIS, ChainRow, row_hash
from satvault.audit.models import AnchorStatus, AuditAnchor
from satvault.audit.service import anchor, head, seal_all, verify
from satvault.cli import app
from satvault.config import reset_settings_cache
from satvault.custody.anchoring import check_anchor_tx
from satvault.kernel.errors import InvalidInput
from satvault.payouts.job import estimate_vsize
from satvault.payouts.models import PayoutBatch, PayoutTx
from satvault.signing.anchor import anchor_script, find_anchor, is_op_return
from tests.audit.test_chain import _bypassing_triggers
from tests.chainenv import Env
from tests.custody.conftest import cold_descriptor
from tests.custody.test_sweeps import deposit, tiers

runner = CliRunner()
COLD = {"cold_descriptor": cold_descriptor(2, 3), "semicold_floor_sat": 0,
        "semicold_ceiling_sat": 10_000_000}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(COLD)


@pytest.fixture
def cli(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``satvault …`` in this process, configured like the environment (its database, the
    simnet node over bitcoind's RPC)."""
    for name, value in (("DATABASE_URL", env.settings.database_url), ("NETWORK", "regtest"),
                        ("CHAIN_BACKEND", "bitcoind"), ("BITCOIND_URL", env.server.url),
                        ("HOME", str(env.settings.home))):
        monkeypatch.setenv(f"SATVAULT_{name}", value)
    reset_settings_cache()

    async def sv(*args: str, code: int = 0) -> dict[str, Any]:
        # the command runs asyncio.run: off this test's event loop
        r = await asyncio.to_thread(runner.invoke, app, list(args))
        assert r.exit_code == code, r.output
        return dict(json.loads(r.stdout.strip().splitlines()[-1]))

    yield sv
    reset_settings_cache()


async def _tx(env: Env, txid: str) -> Transaction:
    async with env.sessions() as s:
        raw = (await s.execute(select(PayoutTx.raw_tx).where(PayoutTx.txid == txid))
               ).scalar_one()
    return Transaction.parse(bytes.fromhex(raw))


def _vsize(tx: Transaction) -> int:
    total = len(tx.serialize())
    for vin in tx.vin:
        vin.witness.items = []
    return -(-(3 * len(tx.serialize()) + total) // 4)


async def _anchors(env: Env) -> list[AuditAnchor]:
    async with env.sessions() as s:
        return list((await s.execute(select(AuditAnchor).order_by(AuditAnchor.id))
                     ).scalars().all())


async def test_a_requested_anchor_rides_the_next_sweep_and_verifies(env: Env, cli):
    await deposit(env, 1_000_000)
    first = await cli("audit", "anchor", "--onchain", "--actor", "ops")
    assert first["onchain"].startswith("requested")
    second = await cli("audit", "anchor", "--onchain", "--actor", "ops")
    assert second["seq"] > first["seq"]  # the first anchor row was chained meanwhile
    decision = await env.runtime.sweeps.step()
    assert decision.anchor_seq == second["seq"]
    await env.runtime.payouts.advance()
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1

    async with env.sessions() as s:
        batch = await s.get(PayoutBatch, decision.batch_id)
        assert batch is not None and batch.txid
    tx = await _tx(env, batch.txid)
    outs = [(bytes(o.script_pubkey.data), int(o.value)) for o in tx.vout]
    assert find_anchor(outs) == (second["seq"], second["hash"])
    assert [v for spk, v in outs if is_op_return(spk)] == [0]  # one anchor, worth nothing
    # The fee pays for the anchor's 55 vB, and the estimate covers the signed size.
    scripts = [b"\x00" * 22, b"\x00" * 34]
    with_anchor = estimate_vsize(1, [*scripts, anchor_script(1, GENESIS)])
    assert with_anchor - estimate_vsize(1, scripts) == 55
    assert batch.fee_sat == with_anchor * batch.feerate_sat_vb
    assert _vsize(tx) <= with_anchor
    # The ledger: every sat of the deposit is in hot, cold or fees; nothing was booked for
    # the anchor.
    t = await tiers(env)
    assert t["deposit_wallet"] == 0 and t["network_fees"] == batch.fee_sat
    assert t["hot_wallet"] + t["cold_wallet"] + t["network_fees"] == 1_000_000
    assert sum(v for _, v in outs) == 1_000_000 - batch.fee_sat
    await env.check()

    older, carried = await _anchors(env)
    assert older.status is AnchorStatus.SUPERSEDED and older.batch_id is None
    assert (carried.status, carried.batch_id, carried.txid, carried.block_height) == \
        (AnchorStatus.CONFIRMED, batch.id, batch.txid, env.chain.height)
    listed = (await cli("audit", "anchors"))["anchors"]
    assert [(a["status"], a["txid"]) for a in listed] == \
        [("confirmed", batch.txid), ("superseded", None)]

    checked = await cli("audit", "verify-anchor", batch.txid)
    assert checked["ok"] and checked["seq"] == second["seq"]
    assert checked["anchored_hash"] == checked["chain_hash"] == second["hash"]
    assert checked["block_height"] == env.chain.height and checked["confirmations"] == 1
    assert checked["record"]["status"] == "confirmed"
    async with env.sessions() as s:
        confirmed = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "audit.anchor_confirmed"))).scalar_one()
    assert json.loads(confirmed.state_after)["txid"] == batch.txid
    assert confirmed.seq is not None  # chained by verify-anchor's sealing round

    # Not every transaction is an anchor.
    assert "does not know" in (await cli("audit", "verify-anchor", "00" * 32,
                                         code=1))["error"]
    spent = tx.vin[0].txid.hex()
    assert "carries no audit anchor" in (await cli("audit", "verify-anchor", spent,
                                                   code=1))["error"]

    # A row at or before the anchored one changed behind the triggers: named.
    await _bypassing_triggers(env.sessions, env.sessions.kw["bind"].dialect.name,
                              "UPDATE audit_events SET actor = 'nobody' WHERE seq = 2",
                              "audit_events")
    broken = await cli("audit", "verify-anchor", batch.txid, code=1)
    assert not broken["ok"] and broken["broken"]["seq"] == 2
    assert "seq=2" in broken["error"] and "changed after sealing" in broken["error"]


async def test_a_rewritten_and_rehashed_chain_fails_its_anchor(env: Env):
    await deposit(env, 600_000)
    top = await anchor(env.sessions, actor="ops", onchain=True)
    batch_id = await env.sweep()
    async with env.sessions() as s:
        txid = (await s.get(PayoutBatch, batch_id)).txid  # type: ignore[union-attr]
    assert (await check_anchor_tx(env.sessions, env.runtime.backend, txid))["ok"]

    # Rewrite the first row and re-hash everything after it, as someone with write access
    # to the database could: the chain is consistent again.
    async with env.sessions() as s:
        rows = (await s.execute(select(AuditEvent).where(AuditEvent.seq.is_not(None))
                                .order_by(AuditEvent.seq))).scalars().all()
    prev, statements = GENESIS, []
    for r in rows:
        actor = "nobody" if r.seq == 1 else r.actor
        h = row_hash(ChainRow(r.id, r.at, actor, r.action, r.object, r.state_before,
                              r.state_after), seq=r.seq, prev=prev)  # type: ignore[arg-type]
        statements.append(f"UPDATE audit_events SET actor = '{actor}', prev_hash = '{prev}', "
                          f"hash = '{h}' WHERE id = {r.id}")
        prev = h
    for statement in statements:
        await _bypassing_triggers(env.sessions, env.sessions.kw["bind"].dialect.name,
                                  statement, "audit_events")
    async with env.sessions() as s:
        assert (await verify(s)).ok  # the chain alone cannot tell
    out = await check_anchor_tx(env.sessions, env.runtime.backend, txid)
    assert not out["ok"] and out["seq"] == top.seq
    assert out["anchored_hash"] == top.hash and out["chain_hash"] != top.hash
    assert "rewritten (and re-hashed)" in out["error"] and f"seq={top.seq}" in out["error"]


@pytest.mark.parametrize("settings_overrides", [{**COLD, "audit_anchor_in_sweeps": True}])
async def test_with_the_setting_every_sweep_anchors_the_latest_sealed_head(env: Env):
    await deposit(env, 500_000)
    await seal_all(env.sessions)
    async with env.sessions() as s:
        top = await head(s)
    assert top is not None
    first = await env.sweep()
    (auto,) = await _anchors(env)
    assert (auto.seq, auto.hash, auto.requested_by, auto.status, auto.batch_id) == \
        (top.seq, top.hash, "sweep", AnchorStatus.CONFIRMED, first)
    # Nothing sealed since: the head has not moved, the next sweep carries no anchor.
    await deposit(env, 500_000)
    decision = await env.runtime.sweeps.step()
    assert decision.batch_id and decision.anchor_seq is None
    async with env.sessions() as s:
        psbt = (await s.get(PayoutBatch, decision.batch_id)).psbt  # type: ignore[union-attr]
    assert not any(is_op_return(bytes(o.script_pubkey.data))
                   for o in PSBT.from_string(psbt).tx.vout)
    await env.check()


async def test_a_fee_bump_keeps_the_anchor_and_the_books_balance(env: Env):
    await deposit(env, 1_000_000)
    top = await anchor(env.sessions, actor="ops", onchain=True)
    decision = await env.runtime.sweeps.step()
    assert decision.anchor_seq == top.seq
    await env.runtime.payouts.advance()
    new_txid = await env.runtime.payouts.bump_fee(decision.batch_id, 25)
    unconfirmed = await check_anchor_tx(env.sessions, env.runtime.backend, new_txid)
    assert not unconfirmed["ok"] and "not confirmed yet" in unconfirmed["error"]
    assert unconfirmed["chain_hash"] == top.hash  # the hashes agree: only the block is missing
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.advance()).confirmed == 1
    (carried,) = await _anchors(env)
    assert carried.status is AnchorStatus.CONFIRMED and carried.txid == new_txid
    tx = await _tx(env, new_txid)
    assert find_anchor((bytes(o.script_pubkey.data), int(o.value)) for o in tx.vout) == \
        (top.seq, top.hash)
    t = await tiers(env)
    assert t["deposit_wallet"] == 0
    assert t["hot_wallet"] + t["cold_wallet"] + t["network_fees"] == 1_000_000
    await env.check()
    assert (await check_anchor_tx(env.sessions, env.runtime.backend, new_txid))["ok"]


async def test_an_abandoned_sweep_hands_its_anchor_to_the_next_one(env: Env):
    await deposit(env, 300_000)
    gone = await deposit(env, 700_000)
    top = await anchor(env.sessions, actor="ops", onchain=True)
    decision = await env.runtime.sweeps.step()
    assert decision.anchor_seq == top.seq
    await env.runtime.payouts.advance()
    env.chain.reorg(1, drop_txids=[gone])  # the sweep spending that deposit cannot exist
    await env.runtime.watcher.step()
    await env.runtime.payouts.advance()
    (waiting,) = await _anchors(env)
    assert (waiting.status, waiting.batch_id) == (AnchorStatus.REQUESTED, None)
    again = await env.sweep()
    (carried,) = await _anchors(env)
    assert (carried.status, carried.batch_id, carried.seq) == \
        (AnchorStatus.CONFIRMED, again, top.seq)
    assert (await check_anchor_tx(env.sessions, env.runtime.backend, carried.txid))["ok"]
    await env.check()


async def test_nothing_sealed_nothing_to_anchor(sessions):
    with pytest.raises(InvalidInput, match="nothing is sealed yet"):
        await anchor(sessions, actor="ops", onchain=True)
    async with sessions() as s:
        assert (await s.execute(select(AuditAnchor))).first() is None
        assert (await s.execute(select(AuditEvent))).first() is None  # nothing recorded
