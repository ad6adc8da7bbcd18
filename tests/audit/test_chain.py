"""The hash-chained audit log on both databases: actions and transfers chained and verified,
tampering found and named, UPDATE/DELETE refused by the database, late commits sealed in
order, anchors printed and recorded."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from satvault.accounts import service as accounts
from satvault.audit import AuditEvent, record, verify
from satvault.audit.service import seal, seal_all
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.store import submit
from tests.factories import books
from tests.test_cli import last_json, sv_here


async def _verify(sessions):
    for _ in range(20):  # another connection's open transaction makes a round wait: again
        if not (await seal_all(sessions)).waiting:
            break
    else:
        raise AssertionError("the sealer kept waiting for an open transaction")
    async with sessions() as s, s.begin():
        return await verify(s)


async def _actions_and_transfers(sessions):
    async with sessions() as s, s.begin():
        user = await accounts.create_user(s, email="ann@example.com", actor="admin:1")
        merchant = await accounts.create_merchant(s, name="Shop", actor="admin:1")
        store = await accounts.create_store(s, merchant_id=merchant.id, name="Web",
                                            actor="admin:1")
        key, _ = await accounts.create_api_key(s, owner_id=user.id, scopes=["wallet:read"],
                                               actor="admin:1")
    async with sessions() as s, s.begin():
        store = await accounts.get_store(s, store.id)
        await accounts.update_store(s, store, changes={"name": "Web 2"}, actor="key_x")
        await accounts.revoke_api_key(s, key_id=key.id, actor="admin:1")
    b = await books(sessions, wallets=3, fund=10_000)
    w = b.wallets
    await submit(sessions, [TransferSpec(f"t{i}", w[i % 3].id, w[(i + 1) % 3].id, 10 + i, "BTC")
                            for i in range(20)])
    await submit(sessions, [TransferSpec("hold", w[0].id, b.platform.clearing.id, 500, "BTC",
                                         kind=TransferKind.PENDING)])
    await submit(sessions, [TransferSpec("post", kind=TransferKind.POST, pending_id="hold")])
    return store


async def _transfer_count(sessions) -> int:
    async with sessions() as s:
        return int((await s.execute(text("SELECT count(*) FROM ledger_transfers"))).scalar_one())


async def test_actions_and_transfers_are_chained_and_verify(sessions):
    store = await _actions_and_transfers(sessions)
    result = await _verify(sessions)
    assert result.ok, result.broken
    assert result.unsealed == 0
    assert result.transfers == await _transfer_count(sessions) > 20
    async with sessions() as s:
        rows = (await s.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars().all()
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert [r.id for r in rows] == sorted(r.id for r in rows)  # seq order is id order
    assert rows[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    update = next(r for r in rows if r.action == "store.update")
    assert (update.object, update.actor) == (store.id, "key_x")
    assert json.loads(update.state_before) == {"name": "Web"}
    assert json.loads(update.state_after) == {"name": "Web 2"}
    assert {"user.create", "merchant.create", "store.create", "apikey.create",
            "apikey.revoke", "ledger.sealed"} <= {r.action for r in rows}
    # new rows after a verify extend the same chain
    async with sessions() as s, s.begin():
        await record(s, actor="admin:1", action="user.suspend", object="usr_x",
                     before={"status": "active"}, after={"status": "suspended"})
    again = await _verify(sessions)
    assert again.ok and again.rows == result.rows + 1


async def _bypassing_triggers(sessions, dialect: str, statement: str, table: str) -> None:
    async with sessions() as s, s.begin():
        if dialect == "postgresql":
            await s.execute(text("SET LOCAL session_replication_role = replica"))
            await s.execute(text(statement))
            return
        names = [r[0] for r in (await s.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
            {"t": table})).all()]
        sqls = [r[0] for r in (await s.execute(text(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
            {"t": table})).all()]
        for name in names:
            await s.execute(text(f"DROP TRIGGER {name}"))
        await s.execute(text(statement))
        for sql in sqls:
            await s.execute(text(sql))


def _dialect(sessions) -> str:
    return sessions.kw["bind"].dialect.name


async def test_a_tampered_row_is_named(sessions):
    await _actions_and_transfers(sessions)
    assert (await _verify(sessions)).ok
    async with sessions() as s:
        victim = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "apikey.create"))).scalar_one()
    await _bypassing_triggers(
        sessions, _dialect(sessions),
        f"UPDATE audit_events SET state_after = '{{\"scopes\": [\"admin\"]}}' "
        f"WHERE id = {victim.id}", "audit_events")
    result = await _verify(sessions)
    assert not result.ok
    assert (result.broken.id, result.broken.seq) == (victim.id, victim.seq)
    assert "changed after sealing" in result.broken.problem
    assert result.rows == victim.seq - 1  # every row before it checked out


async def test_a_deleted_row_is_found(sessions):
    await _actions_and_transfers(sessions)
    assert (await _verify(sessions)).ok
    async with sessions() as s:
        rows = (await s.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars().all()
    gone, after = rows[2], rows[3]
    await _bypassing_triggers(sessions, _dialect(sessions),
                              f"DELETE FROM audit_events WHERE id = {gone.id}", "audit_events")
    result = await _verify(sessions)
    assert not result.ok and result.broken.id == after.id
    assert "missing" in result.broken.problem


async def test_a_tampered_transfer_amount_is_found(sessions):
    await _actions_and_transfers(sessions)
    assert (await _verify(sessions)).ok
    await _bypassing_triggers(sessions, _dialect(sessions),
                              "UPDATE ledger_transfers SET amount = amount + 1 WHERE id = 't5'",
                              "ledger_transfers")
    result = await _verify(sessions)
    assert not result.ok
    async with sessions() as s:
        sealer = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "ledger.sealed").order_by(AuditEvent.seq))).scalars().first()
        seq_t5 = (await s.execute(text(
            "SELECT seq FROM ledger_transfers WHERE id = 't5'"))).scalar_one()
    assert result.broken.id == sealer.id
    rng = json.loads(sealer.state_after)
    assert rng["from_seq"] < seq_t5 <= rng["to_seq"]
    assert "ledger transfers" in result.broken.problem


async def test_a_row_named_like_the_sealers_does_not_stop_the_ledger_being_chained(sessions):
    """Found from outside: any INSERT (the triggers allow them) of a row named
    ``ledger.sealed`` with a huge ``to_seq`` made the sealer skip every later transfer, so a
    transfer changed afterwards behind the triggers was never found, and verify said ok."""
    await _actions_and_transfers(sessions)
    async with sessions() as s, s.begin():
        await record(s, actor="user:mallory", action="ledger.sealed", object="ledger_transfers",
                     after={"from_seq": 0, "to_seq": 10**12, "count": 0, "digest": "0" * 64})
    b = await books(sessions, wallets=2, fund=10_000)
    await submit(sessions, [TransferSpec("late", b.wallets[0].id, b.wallets[1].id, 77, "BTC")])
    first = await _verify(sessions)
    async with sessions() as s:
        total = int((await s.execute(text("SELECT count(*) FROM ledger_transfers"))).scalar_one())
    assert first.ok and first.transfers == total, (first, total)
    await _bypassing_triggers(sessions, _dialect(sessions),
                              "UPDATE ledger_transfers SET amount = 7700000 WHERE id = 'late'",
                              "ledger_transfers")
    assert not (await _verify(sessions)).ok


@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET actor = 'someone else'",
    "UPDATE audit_events SET hash = 'f' || substr(hash, 2)",
    "UPDATE audit_events SET seq = NULL, prev_hash = NULL, hash = NULL",
    "DELETE FROM audit_events",
    "UPDATE ledger_transfers SET amount = amount + 1 WHERE id = 't1'",
    "UPDATE ledger_transfers SET state = 'voided' WHERE id = 'hold'",  # resolved already
    "DELETE FROM ledger_transfers WHERE id = 't1'",
])
async def test_the_database_refuses_update_and_delete(sessions, statement):
    await _actions_and_transfers(sessions)
    await seal_all(sessions)
    async with sessions() as s, s.begin():
        await record(s, actor="a", action="unsealed.row")  # an unsealed row is guarded too
    with pytest.raises(DBAPIError, match="append-only"):
        async with sessions() as s, s.begin():
            await s.execute(text(statement))
    assert (await _verify(sessions)).ok


async def test_an_unsealed_row_cannot_be_rewritten_before_sealing(sessions):
    async with sessions() as s, s.begin():
        await record(s, actor="a", action="x.y", after={"n": 1})
    with pytest.raises(DBAPIError, match="append-only"):
        async with sessions() as s, s.begin():
            await s.execute(text("UPDATE audit_events SET state_after = '{\"n\": 2}'"))
    # …nor sealed with chain fields of one's choosing plus a changed body
    with pytest.raises(DBAPIError, match="append-only"):
        async with sessions() as s, s.begin():
            await s.execute(text("UPDATE audit_events SET seq = 1, prev_hash = 'x', "
                                 "hash = 'y', actor = 'b'"))


async def test_a_late_commit_is_sealed_in_its_place(sessions):
    """A transaction that took a lower id (and a lower transfer seq) commits after a higher
    one: the sealer does not seal past it while it is open, and afterwards chains both in id
    order; verify passes."""
    b = await books(sessions, wallets=2, fund=1000)
    await seal_all(sessions)
    postgres = _dialect(sessions) == "postgresql"
    late = sessions()
    await late.begin()
    await record(late, actor="late", action="late.row")
    await late.flush()
    await late.execute(text(
        "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, asset, "
        "kind, timeout_seconds, linked, code, ref, created_at, dr_debits_posted, "
        "dr_credits_posted, dr_debits_pending, dr_credits_pending, cr_debits_posted, "
        "cr_credits_posted, cr_debits_pending, cr_credits_pending) VALUES ('late', "
        f"{b.wallets[0].id}, {b.wallets[1].id}, 1, 'BTC', 'single', 0, false, '', '', "
        "CURRENT_TIMESTAMP, 0, 0, 0, 0, 0, 0, 0, 0)"))
    try:
        if postgres:  # a second writer commits meanwhile, with higher numbers
            async with sessions() as s, s.begin():
                await record(s, actor="early", action="early.row")
            await submit(sessions, [TransferSpec("early", b.wallets[0].id, b.wallets[1].id, 2,
                                                 "BTC")])
            waited = await seal(sessions, fence_timeout=0.3)
            assert waited.waiting and waited.rows == 0
        sealing = asyncio.create_task(seal_all(sessions, fence_timeout=30))
        await asyncio.sleep(0.5)
        assert not sealing.done()  # the sealer waits for the open transaction
        await late.commit()
        done = await asyncio.wait_for(sealing, 30)
    finally:
        await late.close()
    assert not done.waiting
    result = await _verify(sessions)
    assert result.ok, result.broken
    assert result.unsealed == 0
    assert result.transfers == await _transfer_count(sessions)
    async with sessions() as s:
        order = (await s.execute(select(AuditEvent.action).where(
            AuditEvent.action.in_(["late.row", "early.row"])).order_by(AuditEvent.seq)
        )).scalars().all()
    assert order == (["late.row", "early.row"] if postgres else ["late.row"])


async def test_concurrent_writers_and_sealer_leave_no_gap(sessions):
    b = await books(sessions, wallets=4, fund=100_000)
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        for i in range(15):
            async with sessions() as s, s.begin():
                await record(s, actor=f"w{n}", action="test.write", object=f"{n}:{i}")
            await submit(sessions, [TransferSpec(f"c{n}:{i}", b.wallets[n % 4].id,
                                                 b.wallets[(n + 1) % 4].id, 1, "BTC")])

    async def sealer() -> None:
        while not stop.is_set():
            await seal(sessions, fence_timeout=2)
            await asyncio.sleep(0.01)

    running = asyncio.create_task(sealer())
    await asyncio.gather(*(writer(n) for n in range(8)))
    stop.set()
    await running
    result = await _verify(sessions)
    assert result.ok, result.broken
    assert result.unsealed == 0
    assert result.transfers == await _transfer_count(sessions)
    async with sessions() as s:
        ids = (await s.execute(select(AuditEvent.id).order_by(AuditEvent.seq))).scalars().all()
        writes = (await s.execute(select(func.count()).where(
            AuditEvent.action == "test.write"))).scalar_one()
    assert ids == sorted(ids)
    assert writes == 8 * 15


def test_cli_seal_verify_anchor(db_url, tmp_path):
    home = tmp_path / "home"
    sv_here("init", url=db_url, home=home)
    sv_here("user", "create", "--email", "op@example.com", url=db_url, home=home)
    sealed = last_json(sv_here("audit", "seal", url=db_url, home=home))
    assert sealed["ok"] and sealed["rows"] >= 1
    anchored = last_json(sv_here("audit", "anchor", "--actor", "ops", url=db_url, home=home))
    assert anchored["seq"] == sealed["head"]["seq"] and len(anchored["hash"]) == 64
    checked = last_json(sv_here("audit", "verify", url=db_url, home=home))
    assert checked["ok"] and checked["rows"] == anchored["seq"] + 1  # the anchor row chained

    async def rows():
        from satvault.db import create_engine
        engine = create_engine(db_url, pool_size=1)
        try:
            async with engine.connect() as c:
                return (await c.execute(text(
                    "SELECT id, seq, actor, state_after FROM audit_events "
                    "WHERE action = 'audit.anchor'"))).all()
        finally:
            await engine.dispose()

    (anchor_row,) = asyncio.run(rows())
    assert anchor_row.actor == "ops"
    assert json.loads(anchor_row.state_after)["hash"] == anchored["hash"]
    # tamper with the first row behind the trigger's back: verify names it and exits 1
    async def tamper():
        from satvault.db import create_engine, session_factory
        engine = create_engine(db_url, pool_size=1)
        try:
            await _bypassing_triggers(session_factory(engine), engine.dialect.name,
                                      "UPDATE audit_events SET actor = 'nobody' WHERE seq = 1",
                                      "audit_events")
        finally:
            await engine.dispose()

    asyncio.run(tamper())
    broken = sv_here("audit", "verify", url=db_url, home=home, check=False)
    assert broken.returncode == 1
    out = last_json(broken)
    assert not out["ok"] and out["broken"]["seq"] == 1
    assert "seq=1" in out["error"] and "changed after sealing" in out["error"]
