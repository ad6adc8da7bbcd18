"""The wallet API over HTTP: deposits and withdrawals with Idempotency-Key semantics, scopes and
ownership (another owner's wallet is a 404). These run the whole request path, so a second
transaction opened inside a request (SQLite: one writer) would deadlock here."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from satvault.accounts import service as acc
from tests.chainenv import Env, api_client
from tests.payouts.test_payouts import fund

SAT = 1000
DEST = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"




@pytest.fixture
async def keys(env: Env) -> dict[str, str]:
    async with env.sessions() as s, s.begin():
        _, full = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "wallet:write", "withdrawals:write"])
        _, read = await acc.create_api_key(s, owner_id=env.wallet.owner_id,
                                           scopes=["wallet:read"])
        bob = await acc.create_user(s, email="bob@example.com")
        _, other = await acc.create_api_key(s, owner_id=bob.id, scopes=[
            "wallet:read", "wallet:write", "withdrawals:write"])
    return {"full": full, "read": read, "other": other}


def h(key: str, idem: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if idem:
        headers["Idempotency-Key"] = idem
    return headers


async def test_deposit_over_http_then_withdraw(env: Env, keys):
    async with api_client(env) as c:
        w = env.wallet.id
        r = await c.post(f"/api/v1/wallets/{w}/deposits", headers=h(keys["full"]),
                         json={"method": "onchain", "amount_msat": 300_000 * SAT})
        assert r.status_code == 201, r.text
        dep = r.json()
        assert dep["bip21"].lower().startswith(f"bitcoin:{dep['address']}")
        svg = await c.get(dep["qr_svg"])
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
        env.chain.pay(dep["bip21"])
        env.chain.mine(1)
        await env.runtime.watcher.step()
        got = (await c.get(f"/api/v1/deposits/{dep['id']}", headers=h(keys["read"]))).json()
        assert got["status"] == "paid" and got["payments"][0]["confirmations"] == 1
        assert (await c.get(f"/api/v1/deposits/{dep['id']}", headers=h(keys["other"]))
                ).status_code == 404
        bal = (await c.get(f"/api/v1/wallets/{w}", headers=h(keys["read"]))).json()
        assert bal["available_msat"] == 300_000 * SAT
        await env.sweep()  # the deposit coin moves to the semi-cold wallet that pays out

        body = {"destination": f"bitcoin:{DEST}?amount=0.001", "amount_msat": None}
        r = await c.post(f"/api/v1/wallets/{w}/withdrawals", headers=h(keys["full"], "a"),
                         json=body)
        assert r.status_code == 201, r.text
        wd = r.json()
        assert wd["amount_msat"] == 100_000 * SAT and wd["status"] == "pending"
        await env.runtime.payouts.step()
        env.chain.mine(1)
        await env.runtime.watcher.step()
        await env.runtime.payouts.step()
        got = (await c.get(f"/api/v1/withdrawals/{wd['id']}", headers=h(keys["read"]))).json()
        assert got["status"] == "confirmed" and got["txid"] and got["fee_msat"] > 0
        assert (await c.get(f"/api/v1/withdrawals/{wd['id']}", headers=h(keys["other"]))
                ).status_code == 404
    await env.check()


async def test_idempotency_replay_conflict_and_in_flight(env: Env, keys, monkeypatch):
    from satvault.withdrawals import service as payouts_withdraw

    await fund(env, 200_000)
    gate = asyncio.Event()
    # The unit of work's first step: the risk screening (issue 12), before the hold.
    real = payouts_withdraw.screen_withdrawal

    entered = asyncio.Event()

    async def slow(*args, **kwargs):
        entered.set()
        await gate.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(payouts_withdraw, "screen_withdrawal", slow)
    async with api_client(env) as c:
        url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
        body = {"destination": DEST, "amount_msat": 10_000 * SAT}
        first = asyncio.create_task(c.post(url, headers=h(keys["full"], "k"), json=body))
        await entered.wait()  # the first request holds the key, in the middle of its work
        # Its unit of work has not touched the database yet (the ownership check and the
        # destination were done before it opened), so even SQLite's one writer is free:
        # the twin is answered at once.
        twin = await c.post(url, headers=h(keys["full"], "k"), json=body)
        gate.set()
        r1 = await first
        assert r1.status_code == 201
        assert twin.status_code == 409, twin.text
        replay = await c.post(url, headers=h(keys["full"], "k"), json=body)
        assert replay.status_code == 201 and replay.json() == r1.json()
        assert replay.content == r1.content  # byte for byte: the stored text, sent as it is
        assert replay.headers["idempotent-replayed"] == "true"
        changed = await c.post(url, headers=h(keys["full"], "k"),
                               json={**body, "amount_msat": 11_000 * SAT})
        assert changed.status_code == 422
        missing = await c.post(url, headers=h(keys["full"]), json=body)
        assert missing.status_code == 422
        assert missing.json()["errors"][0]["loc"] == ["header", "idempotency-key"]
        # A refused request is remembered too: replaying it gives the same refusal.
        poor = {"destination": DEST, "amount_msat": 10_000_000 * SAT}
        a = await c.post(url, headers=h(keys["full"], "poor"), json=poor)
        b = await c.post(url, headers=h(keys["full"], "poor"), json=poor)
        assert a.status_code == b.status_code == 422 and a.json() == b.json()
        assert a.content == b.content and b.headers["idempotent-replayed"] == "true"
    assert (await env.balances())["held"] == (10_000 + 5_000) * SAT
    await env.check()


async def test_scopes_and_ownership(env: Env, keys):
    async with api_client(env) as c:
        url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
        body = {"destination": DEST, "amount_msat": 10_000 * SAT}
        assert (await c.post(url, headers=h(keys["read"], "x"), json=body)).status_code == 403
        assert (await c.post(url, headers=h(keys["other"], "x"), json=body)).status_code == 404
        dep = f"/api/v1/wallets/{env.wallet.id}/deposits"
        assert (await c.post(dep, headers=h(keys["other"]), json={})).status_code == 404
        bad = await c.post(url, headers=h(keys["full"], "y"),
                           json={"destination": "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu",
                                 "amount_msat": 10_000 * SAT})
        assert bad.status_code == 422 and bad.json()["title"] == "wrong network"


async def test_expired_idempotency_keys_are_purged(env: Env, keys, clock):
    """A known gap until now: expired keys were deleted only when their owner sent the same
    key again, so the table grew with every withdrawal. The ``idempotency-purge`` worker
    deletes those past their expiry: answered ones, and claims whose request is gone; a claim
    still beating stays, and a live key still replays."""
    from sqlalchemy import select

    from satvault.db import utcnow
    from satvault.idempotency_models import IdempotencyKey, IdempotencyStatus
    from satvault.workers import idempotency_purge_worker

    await fund(env, 200_000)
    async with api_client(env) as c:
        url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
        old = await c.post(url, headers=h(keys["full"], "old"),
                           json={"destination": DEST, "amount_msat": 10_000 * SAT})
        assert old.status_code == 201, old.text
        async with env.sessions() as s, s.begin():
            for key, beat in (("beating", 0), ("dead", 3600)):
                s.add(IdempotencyKey(owner="someone", key=key, request_hash="0" * 64,
                                     status=IdempotencyStatus.RUNNING, created_at=utcnow(),
                                     expires_at=utcnow(), claim_token="t",
                                     heartbeat_at=utcnow() + timedelta(hours=25, seconds=-beat)))
        clock.advance(hours=25)
        body = {"destination": DEST, "amount_msat": 11_000 * SAT}
        new = await c.post(url, headers=h(keys["full"], "new"), json=body)
        assert new.status_code == 201, new.text
        purge = idempotency_purge_worker(env.sessions, 600.0,
                                         stale_seconds=env.settings.idempotency_stale_seconds)
        purge.start()
        while not purge.runs:
            await asyncio.sleep(0.01)
        await purge.stop()
        assert purge.last_error is None
        async with env.sessions() as s:
            left = (await s.execute(select(IdempotencyKey.key))).scalars().all()
        assert sorted(left) == ["beating", "new"]
        replay = await c.post(url, headers=h(keys["full"], "new"), json=body)
        assert replay.headers["idempotent-replayed"] == "true" and replay.json() == new.json()
    await env.check()


async def test_a_key_still_claimed_says_when_to_come_back(env: Env, keys):
    """Found from outside: after a crash in the middle of a withdrawal, its retry with the
    same key met 409 "still being processed" for a minute (the claim of the dead process
    waits to go stale), with nothing saying when to try again. The 409 carries
    ``Retry-After``: the seconds until such a claim may be taken over."""
    from sqlalchemy import update

    from satvault.db import utcnow
    from satvault.idempotency_models import IdempotencyKey, IdempotencyStatus

    await fund(env, 200_000)
    body = {"destination": DEST, "amount_msat": 10_000 * SAT}
    url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
    async with api_client(env) as c:
        first = await c.post(url, headers=h(keys["full"], "crashed"), json=body)
        assert first.status_code == 201, first.text
        async with env.sessions() as s, s.begin():  # as a claim whose process just stopped
            await s.execute(update(IdempotencyKey).where(IdempotencyKey.key == "crashed")
                            .values(status=IdempotencyStatus.RUNNING, heartbeat_at=utcnow()))
        again = await c.post(url, headers=h(keys["full"], "crashed"), json=body)
    assert again.status_code == 409, again.text
    stale = env.settings.idempotency_stale_seconds
    assert stale - 2 <= int(again.headers["retry-after"]) <= stale
    assert f"taken over within {again.headers['retry-after']} s" in again.json()["detail"]
