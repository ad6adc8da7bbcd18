"""KYC tier limits on every rail, through the HTTP API: a tier-0 account is refused above its
limit per transaction, per rolling 24 hours and per rolling 30 days, each rail counted apart;
a rejected record changes nothing; an approved upgrade lets the same payment through."""

from __future__ import annotations

import pytest

from tests.chainenv import LnEnv, api_client
from tests.kyc.helpers import OVERRIDES, RAILS, SAT, bench, problem
from tests.payouts.test_payouts import add_coin


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return OVERRIDES


@pytest.mark.parametrize("rail", RAILS)
async def test_tier_0_refused_per_transaction_24h_30d_then_allowed_after_upgrade(
        lnenv: LnEnv, clock, rail: str):
    env = lnenv
    other = "lightning" if rail != "lightning" else "internal"
    async with api_client(env) as c:
        k = await bench(env, c)
        view = await k.wallet()
        assert view["kyc_tier"] == 0 and view["frozen"] is False
        assert view["limits"][rail]["max_now_msat"] == 10_000 * SAT

        body = problem(await k.pay(rail, 10_001), 422, "kyc-limit-exceeded")
        assert (body["window"], body["rail"], body["kyc_tier"]) == ("transaction", rail, 0)
        assert body["limit_msat"] == 10_000 * SAT and body["left_msat"] == 10_000 * SAT
        assert "tier 1" in body["raise_by"] and "KYC" in body["detail"]

        for _ in range(2):
            r = await k.pay(rail, 10_000)
            assert r.status_code == 201 and r.json()["method"] == rail, r.text
        body = problem(await k.pay(rail, 1_000), 422, "kyc-limit-exceeded")
        assert (body["window"], body["left_msat"]) == ("24h", 0)
        assert "24 hours" in body["detail"]
        # Each rail has its own windows.
        assert (await k.pay(other, 1_000)).status_code == 201
        assert (await k.wallet())["limits"][rail]["day_left_msat"] == 0

        for count in (2, 1):  # a day later the 24-hour window is free again; 30 days is not
            clock.advance(hours=25)
            env.network.advance_time(25 * 3600)
            for _ in range(count):
                assert (await k.pay(rail, 10_000)).status_code == 201
        # 50,000 sat in 30 days, 10,000 in the last 24 hours
        body = problem(await k.pay(rail, 1_000), 422, "kyc-limit-exceeded")
        assert (body["window"], body["left_msat"]) == ("30d", 0)

        r = await k.record("reject", 1)
        assert r.status_code == 201 and r.json()["decision"] == "rejected", r.text
        problem(await k.pay(rail, 1_000), 422, "kyc-limit-exceeded")
        assert (await k.wallet())["kyc_tier"] == 0

        r = await k.record("approve", 1)
        assert r.status_code == 201 and r.json()["decision"] == "approved", r.text
        assert (await k.pay(rail, 50_000)).status_code == 201
        view = await k.wallet()
        assert view["kyc_tier"] == 1
        assert view["limits"][rail]["per_transaction_msat"] == 100_000 * SAT
        problem(await k.pay(rail, 100_001), 422, "kyc-limit-exceeded")

        history = (await c.get(f"/api/v1/admin/kyc/user/{k.user_id}/records",
                               headers=k.admin)).json()
        assert [x["decision"] for x in history["records"]] == ["rejected", "approved"]
        assert history["kyc_tier"] == 1
        assert history["records"][1]["reviewer"] == k.admin_id
    await env.check()


async def test_an_approved_record_can_lower_the_tier_and_the_latest_approval_counts(
        lnenv: LnEnv):
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        assert (await k.record("approve", 2)).status_code == 201
        assert (await k.pay("internal", 150_000)).status_code == 201
        assert (await k.record("approve", 1)).status_code == 201
        body = problem(await k.pay("internal", 150_000), 422, "kyc-limit-exceeded")
        assert body["kyc_tier"] == 1 and body["window"] == "transaction"
        assert (await k.record("reject", 2)).status_code == 201
        assert (await k.wallet())["kyc_tier"] == 1


async def test_records_are_refused_when_malformed_or_self_reviewed(lnenv: LnEnv):
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        problem(await k.record("approve", 1, owner=k.admin_id), 403, "forbidden")
        problem(await k.record("approve", 7), 422, "invalid-input")
        r = await c.post(f"/api/v1/admin/kyc/user/{k.user_id}/records", headers=k.admin,
                         json={"tier": 1, "decision": "approve", "full_name": "Alice"})
        problem(r, 422, "invalid-input")  # an approval names documents and checks
        problem(await k.record("approve", 1, owner="usr_nobody"), 404, "not-found")
        r = await c.post(f"/api/v1/admin/kyc/user/{k.user_id}/records", headers=k.payer,
                         json={"tier": 1, "decision": "approve", "full_name": "Alice"})
        problem(r, 403, "forbidden")  # not an admin key
        history = (await c.get(f"/api/v1/admin/kyc/user/{k.user_id}/records",
                               headers=k.admin)).json()
        assert history["records"] == [] and history["kyc_tier"] == 0


async def test_a_queued_withdrawal_waits_when_its_owner_is_lowered_below_its_amount(
        lnenv: LnEnv):
    """Found from outside: withdrawals queued (``pending``) before an approved record lowered
    the owner's tier still left above the new tier's per-transaction limit (900,000 sat
    broadcast at tier 0). Neither the payout job nor the Lightning payer sends one its owner's
    current tier would refuse; it waits, as a frozen wallet's does, until the tier allows it
    again (or it is cancelled)."""
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        await add_coin(env, 200_000)  # for the payout job to spend
        assert (await k.record("approve", 1)).status_code == 201
        sent = {}
        for rail in ("onchain", "lightning"):
            r = await k.pay(rail, 50_000)  # tier 1: 100,000 sat per transaction
            assert r.status_code == 201 and r.json()["status"] == "pending", r.text
            sent[rail] = r.json()["id"]
        small = await k.pay("lightning", 5_000)  # within tier 0's 10,000
        assert small.status_code == 201, small.text
        assert (await k.record("approve", 0)).status_code == 201
        assert await env.runtime.payouts.create_batch() == 0
        assert (await env.runtime.payer.step()).succeeded == 1  # the small one only

        async def status(wid: str) -> str:
            r = await c.get(f"/api/v1/withdrawals/{wid}", headers=k.payer)
            assert r.status_code == 200, r.text
            return str(r.json()["status"])

        assert [await status(w) for w in sent.values()] == ["pending", "pending"]
        assert await status(small.json()["id"]) == "confirmed"
        # Back at tier 1, both leave.
        assert (await k.record("approve", 1)).status_code == 201
        assert await env.runtime.payouts.create_batch() == 1
        assert (await env.runtime.payer.step()).succeeded == 1
        assert await status(sent["onchain"]) == "batched"
        assert await status(sent["lightning"]) == "confirmed"


async def test_queued_withdrawals_leave_within_the_lowered_tiers_windows_oldest_first(
        lnenv: LnEnv):
    """Found from outside (the gap list): after a tier was lowered, queued withdrawals each
    within the new per-transaction limit all left, though together they passed the new tier's
    24-hour limit. At pick-up each counts what the person's wallets sent on its rail in the
    windows and what was queued before it: the oldest leave while they fit, the rest wait."""
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        for _ in range(2):  # for the payout job to spend, one coin per batch
            await add_coin(env, 200_000)
        assert (await k.record("approve", 1)).status_code == 201
        queued: dict[str, list[str]] = {}
        for rail in ("onchain", "lightning"):
            for _ in range(3):  # 27,000 sat: within tier 1's day, over tier 0's 20,000
                r = await k.pay(rail, 9_000)
                assert r.status_code == 201 and r.json()["status"] == "pending", r.text
                queued.setdefault(rail, []).append(r.json()["id"])
        assert (await k.record("approve", 0)).status_code == 201

        async def statuses(rail: str) -> list[str]:
            out = []
            for wid in queued[rail]:
                r = await c.get(f"/api/v1/withdrawals/{wid}", headers=k.payer)
                assert r.status_code == 200, r.text
                out.append(str(r.json()["status"]))
            return out

        for _ in range(2):  # a pass that sends, and one that finds nothing more to send
            await env.runtime.payouts.step()
            await env.runtime.payer.step()
        assert await statuses("onchain") == ["broadcast", "broadcast", "pending"]
        assert await statuses("lightning") == ["confirmed", "confirmed", "pending"]
        # Back at tier 1, the last ones leave.
        assert (await k.record("approve", 1)).status_code == 201
        await env.runtime.payouts.step()
        assert (await env.runtime.payer.step()).succeeded == 1
        assert await statuses("onchain") == ["broadcast"] * 3
        assert await statuses("lightning") == ["confirmed"] * 3
    await env.check()
