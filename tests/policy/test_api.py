"""The withdrawal policy over HTTP, with Lightning: a payment held for approvers is not sent
until the approvers release it through the API; an internal payment that would need
approvers is refused; the allow-list and the policy's versions through their endpoints."""

from __future__ import annotations

from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.kernel.clock import FakeClock
from satvault.lightning.invoices import create_invoice
from satvault.lightning.models import LnPayment
from satvault.payouts.models import Withdrawal
from satvault.withdrawals.policy import approvals
from tests.chainenv import LnEnv, api_client
from tests.lightning.test_lightning import customer_invoice, fund
from tests.policy.support import People, add_approvers, make_live, people

SAT = 1000


async def keys(env: LnEnv, who: People) -> dict[str, dict[str, str]]:
    out = {}
    async with env.sessions() as s, s.begin():
        for name, uid, scopes in (
                ("alice", env.wallet.owner_id, ["wallet:read", "withdrawals:write"]),
                ("bob", who.bob, ["withdrawals:write"]),
                ("carol", who.carol, ["withdrawals:write"]),
                ("admin1", who.admin1, ["admin"]), ("admin2", who.admin2, ["admin"])):
            _, token = await acc.create_api_key(s, owner_id=uid, scopes=scopes)
            out[name] = {"Authorization": f"Bearer {token}"}
        erin = await acc.create_user(s, email="erin@example.com")  # in no group
        _, token = await acc.create_api_key(s, owner_id=erin.id, scopes=["withdrawals:write"])
        out["erin"] = {"Authorization": f"Bearer {token}"}
    return out


BIG_LIGHTNING = {"name": "big lightning", "action": "require_approval", "approvals": 2,
                 "group": "treasury", "rails": ["lightning"], "min_amount_msat": 50_000 * SAT}


async def approvers_live(env: LnEnv, rule: dict, *, funds_msat: int = 500_000 * SAT
                         ) -> tuple[People, dict[str, dict[str, str]]]:
    """The approvers, a withdrawal policy of ``rule`` live, the wallet funded, everyone's
    API key."""
    who = await people(env.sessions, initiator=env.wallet.owner_id)
    await make_live(env.sessions, who, [rule])
    await fund(env, env.wallet, funds_msat)
    return who, await keys(env, who)


async def test_lightning_payment_waits_for_approvals_then_is_sent(lnenv: LnEnv):
    env = lnenv
    who, k = await approvers_live(env, BIG_LIGHTNING)
    bolt11 = customer_invoice(env, 100_000 * SAT)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         json={"destination": bolt11},
                         headers={**k["alice"], "Idempotency-Key": "w1"})
        assert r.status_code == 201, r.text
        wid = r.json()["id"]
        assert r.json()["status"] == "awaiting_approval"
        assert (await env.runtime.payer.step()).sent == 0  # nobody sends it yet

        r = await c.get("/api/v1/admin/withdrawals/awaiting-approval", headers=k["bob"])
        assert r.status_code == 200 and [w["withdrawal_id"] for w in r.json()] == [wid]
        assert r.json()[0]["required"] == 2 and r.json()[0]["rule"] == "big lightning"
        r = await c.get("/api/v1/admin/withdrawals/awaiting-approval", headers=k["erin"])
        assert r.status_code == 403  # neither admin nor approver
        # Found from outside: an approver of another group saw this one's queue.
        async with env.sessions() as s, s.begin():
            frank = await acc.create_user(s, email="frank@example.com")
            await add_approvers(s, group="ops", user_ids=[frank.id], admins=(who.admin1,
                                                                              who.admin2))
            _, token = await acc.create_api_key(s, owner_id=frank.id,
                                                scopes=["withdrawals:write"])
        r = await c.get("/api/v1/admin/withdrawals/awaiting-approval",
                        headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json() == [], r.text
        r = await c.get("/api/v1/admin/withdrawals/awaiting-approval", headers=k["admin1"])
        assert [w["withdrawal_id"] for w in r.json()] == [wid]
        r = await c.post(f"/api/v1/admin/withdrawals/{wid}/approve", headers=k["erin"])
        assert r.status_code == 403 and "not an approver" in r.json()["detail"]

        r = await c.post(f"/api/v1/admin/withdrawals/{wid}/approve", headers=k["alice"])
        assert r.status_code == 403 and r.json()["type"].endswith("not-an-approver"), r.text
        r = await c.post(f"/api/v1/admin/withdrawals/{wid}/approve", headers=k["bob"])
        assert r.status_code == 200 and r.json() == {
            "withdrawal_id": wid, "status": "awaiting", "approvals": 1, "required": 2}
        r = await c.post(f"/api/v1/admin/withdrawals/{wid}/approve", headers=k["bob"])
        assert r.status_code == 409 and r.json()["type"].endswith("approval-closed")
        assert (await env.runtime.payer.step()).sent == 0
        r = await c.post(f"/api/v1/admin/withdrawals/{wid}/approve", headers=k["carol"])
        assert r.status_code == 200 and r.json()["status"] == "approved"
        report = await env.runtime.payer.step()
        assert (report.sent, report.succeeded) == (1, 1)
        r = await c.get(f"/api/v1/withdrawals/{wid}", headers=k["alice"])
        assert r.json()["status"] == "confirmed"
        r = await c.post(f"/api/v1/admin/withdrawals/{wid}/reject",  # no body: no reason
                         headers=k["carol"])
        assert r.status_code == 409 and r.json()["type"].endswith("approval-closed"), r.text


async def test_internal_payment_needing_approval_is_refused(lnenv: LnEnv):
    env = lnenv
    who = await people(env.sessions, initiator=env.wallet.owner_id)
    await make_live(env.sessions, who, [
        {"name": "internal over 10k", "action": "require_approval", "approvals": 1,
         "group": "treasury", "rails": ["internal"], "min_amount_msat": 10_000 * SAT}])
    await fund(env, env.wallet, 500_000 * SAT)
    carol_wallet = await env.wallet_for("payee@example.com")
    async with env.sessions() as s, s.begin():
        big = await create_invoice(s, backend=env.runtime.lightning, wallet=carol_wallet,
                                   amount_msat=20_000 * SAT)
        small = await create_invoice(s, backend=env.runtime.lightning, wallet=carol_wallet,
                                     amount_msat=5_000 * SAT)
    k = await keys(env, who)
    before = await env.balances()
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         json={"destination": big.bolt11},
                         headers={**k["alice"], "Idempotency-Key": "i1"})
        assert r.status_code == 403, r.text
        assert r.json()["type"].endswith("withdrawal-blocked")
        assert "cannot wait for approval" in r.json()["detail"]
        assert await env.balances() == before
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         json={"destination": small.bolt11},
                         headers={**k["alice"], "Idempotency-Key": "i2"})
        assert r.status_code == 201 and r.json()["method"] == "internal", r.text
    async with env.sessions() as s:
        rows = (await s.execute(select(Withdrawal.amount_msat))).scalars().all()
        assert rows == [5_000 * SAT]
        assert (await s.execute(select(LnPayment))).first() is None


async def test_allowlist_and_policy_endpoints(lnenv: LnEnv):
    env = lnenv
    who = await people(env.sessions, initiator=env.wallet.owner_id)
    k = await keys(env, who)
    node = "02" + "ab" * 32
    async with api_client(env) as c:
        base = f"/api/v1/wallets/{env.wallet.id}/allowlist"
        r = await c.post(base, json={"destination": node.upper(), "label": "exchange"},
                         headers=k["alice"])
        assert r.status_code == 201, r.text
        entry = r.json()
        assert entry["kind"] == "node" and entry["destination"] == node
        r = await c.post(base, json={"destination": node}, headers=k["alice"])
        assert r.status_code == 409
        r = await c.post(base, json={"destination": "not a destination"}, headers=k["alice"])
        assert r.status_code == 422 and r.json()["type"].endswith("invalid-policy")
        r = await c.get(base, headers=k["bob"])
        assert r.status_code in (403, 404)  # bob's key neither reads nor sees alice's wallet
        r = await c.get(base, headers=k["alice"])
        assert [e["id"] for e in r.json()] == [entry["id"]]
        r = await c.delete(f"{base}/{entry['id']}", headers=k["alice"])
        assert r.status_code == 204
        assert (await c.get(base, headers=k["alice"])).json() == []

        rules = [{"name": "cap", "action": "block", "min_amount_msat": 10**9}]
        r = await c.post("/api/v1/admin/withdrawal-policy", json={"rules": rules},
                         headers=k["alice"])
        assert r.status_code == 403
        r = await c.post("/api/v1/admin/withdrawal-policy", json={"rules": rules},
                         headers=k["admin1"])
        assert r.status_code == 201 and r.json()["status"] == "proposed", r.text
        version = r.json()["version"]
        r = await c.post(f"/api/v1/admin/withdrawal-policy/{version}/approve",
                         headers=k["admin1"])
        assert r.status_code == 403 and "second admin" in r.json()["detail"]
        r = await c.post(f"/api/v1/admin/withdrawal-policy/{version}/approve",
                         headers=k["admin2"])
        assert r.status_code == 200 and r.json()["status"] == "live"
        assert r.json()["approved_by"] == who.admin2 and r.json()["rules"] == rules
        r = await c.get("/api/v1/admin/withdrawal-policy", headers=k["admin1"])
        assert [(p["version"], p["status"]) for p in r.json()] == [(version, "live")]
        # A proposal is rejected (withdrawn) by a second admin only, and never applies.
        r = await c.post("/api/v1/admin/withdrawal-policy", json={"rules": []},
                         headers=k["admin1"])
        other = r.json()["version"]
        r = await c.post(f"/api/v1/admin/withdrawal-policy/{other}/reject",
                         headers=k["admin1"])
        assert r.status_code == 403 and "second admin" in r.json()["detail"]
        r = await c.post(f"/api/v1/admin/withdrawal-policy/{other}/reject",
                         headers=k["admin2"])
        assert r.status_code == 200 and r.json()["status"] == "withdrawn", r.text
        r = await c.post(f"/api/v1/admin/withdrawal-policy/{other}/approve",
                         headers=k["admin2"])
        assert r.status_code == 422
        r = await c.get("/api/v1/admin/withdrawal-policy", headers=k["admin1"])
        assert [(p["version"], p["status"]) for p in r.json()] == [
            (other, "withdrawn"), (version, "live")]


async def test_expired_lightning_payment_is_never_sent_and_its_hold_released(
        lnenv: LnEnv, clock: FakeClock):
    env = lnenv
    who = await people(env.sessions, initiator=env.wallet.owner_id)
    await make_live(env.sessions, who, [
        {"name": "all lightning", "action": "require_approval", "approvals": 1,
         "group": "treasury", "rails": ["lightning"]}])
    await fund(env, env.wallet, 500_000 * SAT)
    before = await env.balances()
    k = await keys(env, who)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         json={"destination": customer_invoice(env, 10_000 * SAT)},
                         headers={**k["alice"], "Idempotency-Key": "e1"})
        assert r.status_code == 201 and r.json()["status"] == "awaiting_approval", r.text
        wid = r.json()["id"]
    assert (await env.balances())["held"] > 0
    clock.advance(seconds=env.settings.withdrawal_approval_ttl_seconds + 1)
    async with env.sessions() as s, s.begin():
        assert await approvals.expire_due(s) == 1
    assert (await env.runtime.payer.step()).sent == 0
    assert await env.balances() == before
    async with env.sessions() as s:
        wd = await s.get(Withdrawal, wid)
        payment = (await s.execute(select(LnPayment).where(
            LnPayment.withdrawal_id == wid))).scalar_one()
    assert wd is not None and wd.status == "cancelled" and payment.status == "failed"
    await env.check()


async def test_a_deadlock_under_a_rejection_is_retried_never_a_500(lnenv: LnEnv):
    """Found from outside (PostgreSQL, concurrent rejections, approvals and new withdrawals
    of one wallet): a rejection voids the hold (the ledger's rows) before its status change
    takes the wallet's roll-up lock, while a release takes them the other way round.
    PostgreSQL broke the deadlock by aborting the rejection, which answered 500 and lost the
    decision. Forced here with another session that takes the roll-up lock, waits for the
    rejection to queue behind it, then asks for the wallet's ledger row; the rejection is
    the victim and is run again (an edge that sees a conflict outlive its retries answers
    409 concurrent-update, never 500)."""
    import asyncio

    from sqlalchemy import text

    env = lnenv
    if env.sessions.kw["bind"].dialect.name != "postgresql":
        return  # SQLite has one writer: no deadlock to break
    _, k = await approvers_live(env, BIG_LIGHTNING)
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(env.sessions.kw["bind"].url)  # a session of its own
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         json={"destination": customer_invoice(env, 100_000 * SAT)},
                         headers={**k["alice"], "Idempotency-Key": "dl"})
        wid = r.json()["id"]
        assert r.json()["status"] == "awaiting_approval", r.text
        async with engine.connect() as other:
            await other.execute(text("SET deadlock_timeout = '30s'"))  # never the victim
            await other.execute(text("SELECT pg_advisory_xact_lock(39, hashtext(:w))"),
                                {"w": env.wallet.id})
            rejecting = asyncio.create_task(c.post(
                f"/api/v1/admin/withdrawals/{wid}/reject", json={"reason": "no"},
                headers=k["bob"]))
            for _ in range(400):  # until the rejection waits for the lock we hold
                waiting = (await other.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND wait_event = 'advisory' AND pid <> pg_backend_pid()"))).scalar()
                if waiting or rejecting.done():
                    break
                await asyncio.sleep(0.025)
            acts = (await other.execute(text(
                "SELECT wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"))).all()
            assert waiting == 1, (rejecting.done() and (await rejecting).text, acts)
            await other.execute(text(
                "SELECT 1 FROM ledger_accounts WHERE id = :a FOR UPDATE"),
                {"a": env.wallet.ledger_account_id})
            await other.commit()
        await engine.dispose()
        r = await rejecting
        assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    async with env.sessions() as s:
        assert (await s.get(Withdrawal, wid)).status == "cancelled"
