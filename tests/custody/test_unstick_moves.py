"""Resolving a ``stuck`` sweep or refill (``satvault custody resolve``, ``POST
/api/v1/admin/custody-moves/{id}/resolve``, the ``payout_stuck`` item's page), each way
refused with nothing changed unless the chain node proves it safe:

* ``abandon``: no version of the move can confirm any more (none is known to the node, and
  one of its coins is spent by a confirmed transaction; for a sweep also: none was ever
  accepted by a node); the move is ``abandoned`` and its coins are free again, the books
  untouched (a move is booked only when it confirms);
* ``confirmed-by TXID``: a confirmed transaction spending only the move's coins and paying
  only the platform's own hot and cold move addresses did the move (after a restore, say);
  it is booked exactly as the move's own confirmation would be (source tier → hot / cold +
  the miners' fee), and the coins it did not spend are free again.

Two resolutions of one move at once: exactly one happens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from satvault.accounts import service as acc
from satvault.audit.models import AuditEvent
from satvault.custody.ceremony import import_signatures
from satvault.custody.status import custody_status
from satvault.ledger.models import LedgerTransfer
from satvault.onchain.models import OnchainAddress, OnchainPayment, ReviewItem
from satvault.payouts.models import PayoutBatch, PayoutInput, PayoutTx
from satvault.signer._hd import Keyring
from satvault.signing.paths import WalletName
from tests.chainenv import SEED, Env, api_client
from tests.custody.conftest import cold_descriptor, make_cosigners
from tests.custody.test_cold import embit_sign
from tests.custody.test_refill import REFILL_SETTINGS, fund_cold
from tests.custody.test_sweeps import deposit, outputs_by_role, tiers
from tests.payouts.test_payouts import external_address, received, withdraw
from tests.payouts.test_unstick import cli as payouts_resolve
from tests.simnet import txbuild
from tests.test_cli import last_json, sv_here
from tests.waiting import lock_waiter

SAT = 1000
ADMIN = ("--as", "root@example.com")


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"cold_descriptor": cold_descriptor(2, 3), "semicold_floor_sat": 0,
            "semicold_ceiling_sat": 10_000_000}


async def admin(env: Env) -> tuple[str, str]:
    """An admin user's key, and a key of the customer (not an admin)."""
    async with env.sessions() as s, s.begin():
        root = await acc.create_user(s, email="root@example.com", is_admin=True)
        _, key = await acc.create_api_key(s, owner_id=root.id, scopes=["admin"])
        _, plain = await acc.create_api_key(s, owner_id=env.wallet.owner_id,
                                            scopes=["wallet:read"])
    return key, plain


def h(key: str, idem: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **({"Idempotency-Key": idem} if idem else {})}


def url(move_id: str) -> str:
    return f"/api/v1/admin/custody-moves/{move_id}/resolve"


async def cli(env: Env, db_url: str, tmp_path: Path, *args: str) -> Any:
    """``satvault custody resolve …`` against this environment's node (it asks no signer)."""
    return await asyncio.to_thread(
        sv_here, "custody", "resolve", *args, url=db_url, home=tmp_path, check=False,
        env={"SATVAULT_CHAIN_BACKEND": "bitcoind", "SATVAULT_BITCOIND_URL": env.server.url,
             "SATVAULT_NETWORK": "regtest", "SATVAULT_LIGHTNING_BACKEND": "none",
             "SATVAULT_PAYOUT_CONFIRMATIONS": "1"})


async def state(env: Env, move_id: str) -> dict[str, Any]:
    """What a resolution changes, to compare before and after."""
    async with env.sessions() as s:
        b = await s.get(PayoutBatch, move_id)
        assert b is not None
        items = (await s.execute(select(ReviewItem).where(
            ReviewItem.subject == move_id, ReviewItem.kind == "payout_stuck"))).scalars().all()
        audit = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "custody_move.resolved",
            AuditEvent.object == f"payout_batch:{move_id}"))).scalars().all()
        inputs = (await s.execute(select(func.count()).select_from(PayoutInput).where(
            PayoutInput.batch_id == move_id))).scalar_one()
        transfers = (await s.execute(select(func.count()).select_from(LedgerTransfer)
                                     )).scalar_one()
    return {"status": b.status.value, "txid": b.txid, "fee_sat": b.fee_sat, "inputs": inputs,
            "open_items": [i.id for i in items if i.resolved_at is None],
            "audit": [(a.actor, json.loads(a.state_after)) for a in audit],
            "transfers": transfers, "tiers": await tiers(env)}


async def coins_of(env: Env, move_id: str) -> list[OnchainPayment]:
    async with env.sessions() as s:
        return list((await s.execute(select(OnchainPayment).join(
            PayoutInput, PayoutInput.payment_id == OnchainPayment.id).where(
            PayoutInput.batch_id == move_id).order_by(OnchainPayment.value_sat.desc())
        )).scalars().all())


async def spend_with_the_seed(env: Env, coin: OnchainPayment, fee: int) -> str:
    """Someone holding the seed spends a deposit coin with their own tools, to a stranger."""
    async with env.sessions() as s:
        addr = await s.get(OnchainAddress, coin.address_id)
        assert addr is not None
    key = Keyring(SEED, "regtest").private_key(WalletName.DEPOSIT, addr.chain, addr.idx)
    thief = txbuild.p2wpkh(txbuild.key(99))
    tx = txbuild.unsigned((coin.txid, coin.vout), [(thief.spk, coin.value_sat - fee)])
    txbuild.sign(tx, txbuild.p2wpkh(key), coin.value_sat)
    return await env.runtime.backend.broadcast(tx.serialize().hex())


async def leaked_sweep(env: Env) -> tuple[str, str, OnchainPayment, OnchainPayment]:
    """A sweep a node accepted (the chain watcher saw it spend its coins), then replaced in
    the mempool by a transaction of someone holding the seed that spends one of its deposit
    coins (a higher fee): its rebroadcast is refused and the coin is spent by a transaction
    satvault does not know, so it is stuck. The sweep, the stranger's transaction, the coin
    it spends, the other coin."""
    await deposit(env, 600_000)
    await deposit(env, 400_000)
    decision = await env.runtime.sweeps.step()
    assert decision.batch_id is not None, decision.reason
    assert (await env.runtime.payouts.advance()).broadcast == 1
    await env.runtime.watcher.step()  # its coins noted spent by the sweep
    big, small = await coins_of(env, decision.batch_id)
    spender = await spend_with_the_seed(env, big, 20_000)
    await env.runtime.watcher.step()
    report = await env.runtime.payouts.advance()
    assert report.stuck == 1, report
    async with env.sessions() as s:
        batch = await s.get(PayoutBatch, decision.batch_id)
    assert batch is not None and batch.status == "stuck" and batch.broadcast_attempts == 1
    return decision.batch_id, spender, big, small


async def forget(env: Env, move_id: str, txid: str) -> None:
    """What a restore of a backup taken before the move leaves: no batch, its coins unspent
    on the books (the chain watcher had recorded its outputs: the same addresses, allocated
    again after the restore)."""
    async with env.sessions() as s, s.begin():
        await s.execute(delete(PayoutInput).where(PayoutInput.batch_id == move_id))
        await s.execute(delete(PayoutTx).where(PayoutTx.batch_id == move_id))
        await s.execute(delete(PayoutBatch).where(PayoutBatch.id == move_id))
        await s.execute(update(OnchainPayment).where(OnchainPayment.spent_by == txid)
                        .values(spent_by=None))


async def forgotten_sweep(env: Env, *, extra_sat: int = 0) -> tuple[str, str]:
    """As after a restore: a sweep S1 confirmed, the database forgot it and swept the same
    deposit coins again (with one more deposit of ``extra_sat``): the node refuses the new
    sweep, S1 having spent them, and it is stuck. S1's txid and the stuck sweep."""
    await deposit(env, 600_000)
    await deposit(env, 400_000)
    first = await env.runtime.sweeps.step()
    assert first.batch_id is not None, first.reason
    assert (await env.runtime.payouts.advance()).broadcast == 1
    async with env.sessions() as s:
        s1 = (await s.get(PayoutBatch, first.batch_id)).txid  # type: ignore[union-attr]
    assert s1 is not None
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await forget(env, first.batch_id, s1)
    if extra_sat:
        await deposit(env, extra_sat)
    again = await env.runtime.sweeps.step()
    assert again.batch_id is not None, again.reason
    report = await env.runtime.payouts.advance()
    assert (report.signed, report.broadcast, report.stuck) == (1, 0, 1), report
    return s1, again.batch_id


async def test_abandon_waits_until_the_node_proves_the_sweep_cannot_confirm(
        env: Env, db_url, tmp_path):
    move_id, spender, big, small = await leaked_sweep(env)
    await admin(env)
    before = await state(env, move_id)
    assert len(before["open_items"]) == 1
    assert before["tiers"]["deposit_wallet"] == 1_000_000

    refusals = [
        (("--abandon", "--as", "alice@example.com", "--note", "x"), "not an admin"),
        (("--abandon", *ADMIN, "--note", " "), "note"),
        # It was accepted by a node once, and the stranger's transaction is only in the
        # mempool: a version of the sweep could still confirm.
        (("--abandon", *ADMIN, "--note", "x"), "could still confirm"),
        (("--confirmed-by", "ab" * 32, *ADMIN, "--note", "x"), "not known to the node"),
        (("--confirmed-by", spender, *ADMIN, "--note", "x"), "0 confirmation(s)"),
    ]
    for args, says in refusals:
        out = await cli(env, db_url, tmp_path, move_id, *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert says in last_json(out)["error"], (args, last_json(out))
        assert await state(env, move_id) == before
    for args in (("--abandon", "--confirmed-by", spender), ()):
        out = await cli(env, db_url, tmp_path, move_id, *args, *ADMIN, "--note", "x")
        assert out.returncode != 0 and await state(env, move_id) == before
    # A sweep is not a payout batch: `payouts resolve` says where it is resolved.
    out = await payouts_resolve(env, db_url, tmp_path, move_id, "--requeue", *ADMIN,
                                "--note", "x")
    assert out.returncode == 1 and "custody resolve" in last_json(out)["error"], out.stdout

    env.chain.mine(1)  # the stranger's transaction confirms: no version of the sweep can now
    await env.runtime.watcher.step()
    # It spends the sweep's coin but pays a stranger: no move of ours, not booked as one.
    out = await cli(env, db_url, tmp_path, move_id, "--confirmed-by", spender, *ADMIN,
                    "--note", "x")
    assert out.returncode == 1 and "not an address of our" in last_json(out)["error"], out
    assert await state(env, move_id) == before

    done = await cli(env, db_url, tmp_path, move_id, "--abandon", *ADMIN,
                     "--note", "a deposit key leaked; the coin is gone")
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = last_json(done)
    assert out["ok"] and out["action"] == "abandon"
    assert out["move"] == {"id": move_id, "kind": "sweep", "status": "abandoned",
                           "txid": before["txid"], "fee_sat": before["fee_sat"]}
    assert out["released"] == [{"outpoint": f"{small.txid}:{small.vout}", "spent_by": None}]
    # The watcher had noted the stolen coin spent by the sweep (not by the stranger, whose
    # transaction replaced it): it stays held by the abandoned sweep, out of later moves.
    assert out["kept"] == [{"outpoint": f"{big.txid}:{big.vout}", "spent_by": None}]
    assert "is spent by a confirmed transaction" in out["proof"]
    after = await state(env, move_id)
    assert after["status"] == "abandoned" and after["inputs"] == 1
    assert after["open_items"] == [] and after["transfers"] == before["transfers"]
    assert after["tiers"] == before["tiers"]  # a move is booked only when it confirms
    ((actor, audited),) = after["audit"]
    assert actor.startswith("user:") and audited["action"] == "abandon"
    assert audited["note"] == "a deposit key leaked; the coin is gone"
    again = await cli(env, db_url, tmp_path, move_id, "--abandon", *ADMIN, "--note", "twice")
    assert again.returncode == 1 and "abandoned" in last_json(again)["error"]

    # The coin nobody spent is swept again, alone; the one the stranger took stays on the
    # books for a person (a custody difference).
    swept = await env.sweep()
    assert [c.id for c in await coins_of(env, swept)] == [small.id]
    t = await tiers(env)
    assert t["deposit_wallet"] == big.value_sat
    assert t["hot_wallet"] + t["cold_wallet"] + t["network_fees"] == small.value_sat
    await env.check()


async def test_confirmed_by_its_own_version_books_it_as_the_payout_job_would(env: Env):
    """The stranger's transaction leaves the mempool and the sweep's own version, which
    another node kept, is mined after all: the stuck sweep is booked as done by it."""
    move_id, spender, _, _ = await leaked_sweep(env)
    key, _ = await admin(env)
    async with env.sessions() as s:
        (version,) = (await s.execute(select(PayoutTx).where(
            PayoutTx.batch_id == move_id))).scalars().all()
    env.chain.reorg(1, drop_txids=[spender])
    await env.runtime.backend.broadcast(version.raw_tx)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    before = await state(env, move_id)
    async with api_client(env) as c:
        r = await c.post(url(move_id), headers=h(key, "give-up"),
                         json={"action": "abandon", "note": "x"})
        assert r.status_code == 409 and "known to the node" in r.json()["detail"], r.text
        assert await state(env, move_id) == before
        r = await c.post(url(move_id), headers=h(key, "done"), json={
            "action": "confirmed_by", "txid": version.txid, "note": "mined after all"})
        assert r.status_code == 200, r.text
    out = r.json()
    moved = await outputs_by_role(env, version.txid)
    assert out["move"]["status"] == "confirmed" and out["move"]["txid"] == version.txid
    assert out["booked"] == {"from": "deposit", "hot_sat": moved["hot"],
                             "cold_sat": moved["cold"], "fee_sat": version.fee_sat}
    assert out["released"] == []
    assert await tiers(env) == {"deposit_wallet": 0, "hot_wallet": moved["hot"],
                                "cold_wallet": moved["cold"], "network_fees": version.fee_sat}
    assert (await custody_status(env.sessions, env.runtime.backend)).differences == []
    await env.check()


async def test_confirmed_by_books_the_sweep_a_restored_database_forgot(env: Env):
    s1, move_id = await forgotten_sweep(env, extra_sat=300_000)
    key, plain = await admin(env)
    coins = await coins_of(env, move_id)
    assert len(coins) == 3
    extra = next(c for c in coins if c.value_sat == 300_000)
    before = await state(env, move_id)
    assert before["tiers"] == {"deposit_wallet": 1_300_000, "hot_wallet": 0, "cold_wallet": 0,
                               "network_fees": 0}
    body = {"action": "confirmed_by", "txid": s1, "note": "swept before the restore"}
    async with api_client(env) as c:
        assert (await c.post(url(move_id), headers=h(key), json=body)).status_code == 422
        assert (await c.post(url(move_id), headers=h(plain, "k0"), json=body)
                ).status_code == 403
        assert (await c.post(url("swp_nope"), headers=h(key, "k1"), json=body)
                ).status_code == 404
        for bad, says in [({"action": "abandon", "txid": s1}, None),
                          ({"action": "confirmed_by", "txid": None}, None),
                          ({"action": "confirmed_by", "txid": extra.txid},
                           "which is not a coin of this sweep")]:
            r = await c.post(url(move_id), headers=h(key, f"bad-{bad}"), json={**body, **bad})
            assert r.status_code == (422 if says is None else 409), (bad, r.text)
            if says:
                assert r.json()["title"] == "cannot resolve batch" and says in r.json()["detail"]
        assert await state(env, move_id) == before

        r = await c.post(url(move_id), headers=h(key, "go"), json=body)
        assert r.status_code == 200, r.text
        replay = await c.post(url(move_id), headers=h(key, "go"), json=body)
        assert replay.content == r.content and replay.headers["idempotent-replayed"] == "true"
    out = r.json()
    moved = await outputs_by_role(env, s1)
    fee = 1_000_000 - moved["hot"] - moved["cold"]
    assert out["move"] == {"id": move_id, "kind": "sweep", "status": "confirmed", "txid": s1,
                           "fee_sat": fee}
    assert out["booked"] == {"from": "deposit", "hot_sat": moved["hot"],
                             "cold_sat": moved["cold"], "fee_sat": fee}
    # The coin S1 did not spend is free again: the next sweep takes it.
    assert out["released"] == [{"outpoint": f"{extra.txid}:{extra.vout}", "spent_by": None}]
    after = await state(env, move_id)
    assert after["status"] == "confirmed" and after["txid"] == s1
    assert after["inputs"] == 2 and after["open_items"] == []
    assert after["tiers"] == {"deposit_wallet": 300_000, "hot_wallet": moved["hot"],
                              "cold_wallet": moved["cold"], "network_fees": fee}
    ((_, audited),) = after["audit"]
    assert audited["action"] == "confirmed_by" and audited["note"] == "swept before the restore"
    # The books match the coins again, tier by tier.
    assert (await custody_status(env.sessions, env.runtime.backend)).differences == []

    # S1's semi-cold coin pays withdrawals; the extra deposit is swept by the next sweep.
    dest = external_address(env, 3)
    await withdraw(env, dest, 100_000)
    assert (await env.runtime.payouts.step()).broadcast == 1
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).confirmed == 1
    assert await received(env, dest) == 100_000
    await env.sweep()
    assert (await tiers(env))["deposit_wallet"] == 0
    await env.check()


async def test_two_resolutions_of_one_move_at_once_one_happens(
        env: Env, monkeypatch: pytest.MonkeyPatch):
    from satvault.reconcile import stuck_moves

    s1, move_id = await forgotten_sweep(env)
    key, _ = await admin(env)
    held, release = asyncio.Event(), asyncio.Event()
    record = stuck_moves.record

    async def slow_record(*args: Any, **kw: Any) -> None:  # resolved, not committed
        await record(*args, **kw)
        if not held.is_set():
            held.set()
            await release.wait()

    monkeypatch.setattr(stuck_moves, "record", slow_record)
    engine = env.sessions.kw["bind"]
    async with api_client(env) as c:
        first = asyncio.create_task(c.post(url(move_id), headers=h(key, "a"), json={
            "action": "confirmed_by", "txid": s1, "note": "swept before the restore"}))
        try:
            await asyncio.wait_for(held.wait(), 10)
            second = asyncio.create_task(c.post(url(move_id), headers=h(key, "b"), json={
                "action": "abandon", "note": "give it up"}))
            if engine.dialect.name == "postgresql":  # until it waits for the batch's row
                await lock_waiter(engine, second, query_like="UPDATE payout_batches%")
        finally:
            release.set()
        won = await asyncio.wait_for(first, 10)
        lost = await asyncio.wait_for(second, 70)
    assert won.status_code == 200, won.text
    assert lost.status_code == 409 and "confirmed" in lost.json()["detail"], lost.text
    after = await state(env, move_id)
    assert after["status"] == "confirmed" and after["txid"] == s1
    assert [a["action"] for _, a in after["audit"]] == ["confirmed_by"]
    assert (await custody_status(env.sessions, env.runtime.backend)).differences == []
    await env.check()


async def cosign(env: Env, move_id: str) -> None:
    """Two of the three cold cosigners sign the refill, and it is imported."""
    async with env.sessions() as s:
        psbt = (await s.get(PayoutBatch, move_id)).psbt  # type: ignore[union-attr]
    a, b, _ = make_cosigners(3)
    async with env.sessions() as s, s.begin():
        done = await import_signatures(s, files=[("a", embit_sign(psbt, a)),
                                                 ("b", embit_sign(psbt, b))],
                                       network="regtest", batch_id=move_id)
    assert done.complete


@pytest.mark.parametrize("settings_overrides", [REFILL_SETTINGS])
async def test_confirmed_by_books_a_refill_a_restored_database_forgot(env: Env, db_url,
                                                                      tmp_path):
    await fund_cold(env, 1_000_000)
    first = (await env.runtime.refills.step()).batch_id
    assert first is not None
    await cosign(env, first)
    assert (await env.runtime.payouts.advance()).broadcast == 1
    async with env.sessions() as s:
        r1 = (await s.get(PayoutBatch, first)).txid  # type: ignore[union-attr]
    assert r1 is not None
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await forget(env, first, r1)
    again = (await env.runtime.refills.step()).batch_id  # the same cold coin, asked again
    assert again is not None
    await cosign(env, again)
    report = await env.runtime.payouts.advance()
    assert (report.broadcast, report.stuck) == (0, 1), report
    await admin(env)
    (coin,) = await coins_of(env, again)
    before = await state(env, again)

    out = await cli(env, db_url, tmp_path, again, "--confirmed-by", coin.txid, *ADMIN,
                    "--note", "x")
    assert out.returncode == 1 and "not a coin of this refill" in last_json(out)["error"]
    assert await state(env, again) == before
    done = await cli(env, db_url, tmp_path, again, "--confirmed-by", r1, *ADMIN,
                     "--note", "cosigned before the restore")
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = last_json(done)
    fee = out["move"]["fee_sat"]
    assert out["move"]["status"] == "confirmed" and out["move"]["txid"] == r1
    # The change back to cold is no move: cold → semi-cold and the miners' fee are booked.
    assert out["booked"] == {"from": "cold", "hot_sat": 500_000, "cold_sat": 0,
                             "fee_sat": fee}
    assert await tiers(env) == {"deposit_wallet": 0, "hot_wallet": 500_000,
                                "cold_wallet": 1_000_000 - 500_000 - fee, "network_fees": fee}
    assert (await state(env, again))["open_items"] == []
    assert (await custody_status(env.sessions, env.runtime.backend)).differences == []
    assert "not under its floor" in (await env.runtime.refills.step()).reason
    await env.check()


async def test_the_admin_console_resolves_a_stuck_move_from_its_review_item(env: Env):
    """A ``payout_stuck`` item naming a sweep offers the move's ways on its page, resolved as
    through the API: refused with nothing changed unless the node proves it, then done, the
    item resolved with the note."""
    from tests.web.pages.admin_support import sign_in_admin
    from tests.web.pages.conftest import PASSWORD, csrf_of

    s1, move_id = await forgotten_sweep(env)
    async with env.sessions() as s, s.begin():
        await acc.create_user(s, email="root@example.com", password=PASSWORD, is_admin=True)
        item_id = (await s.execute(select(ReviewItem.id).where(
            ReviewItem.subject == move_id, ReviewItem.kind == "payout_stuck"))).scalar_one()
    before = await state(env, move_id)
    form = {"action": "confirmed_by", "txid": "ab" * 32, "note": "swept before the restore"}
    async with api_client(env) as c:
        await sign_in_admin(c, env.sessions)
        page = await c.get(f"/admin/review/{item_id}")
        assert f'action="/admin/review/{item_id}/resolve-move"' in page.text
        assert "resolve-batch" not in page.text  # no payout ways for a sweep
        form["csrf_token"] = csrf_of(page.text)
        r = await c.post(f"/admin/review/{item_id}/resolve-move", data=form)
        assert r.status_code == 409 and "not known to the node" in r.text, r.text
        assert 'value="confirmed_by" checked' in r.text  # the choice kept on the refusal
        assert await state(env, move_id) == before

        r = await c.post(f"/admin/review/{item_id}/resolve-move", data={**form, "txid": s1})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == f"/admin/review?done={item_id}"
    after = await state(env, move_id)
    assert after["status"] == "confirmed" and after["txid"] == s1
    assert after["open_items"] == []
    assert [a["action"] for _, a in after["audit"]] == ["confirmed_by"]
    await env.check()
