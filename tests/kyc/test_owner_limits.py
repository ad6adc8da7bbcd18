"""The limits count a person's wallets together, through the HTTP API: a user's own wallet and
the wallets of the merchants the user owns share the KYC tier's 24-hour and 30-day windows
and the platform's rolling 24-hour limit, so opening a merchant does not buy a second
allowance. The per-transaction limit is the paying wallet's, unchanged; another person's
wallets are not counted; two wallets of one user racing at the limit pass it together no
more than one wallet does (and on PostgreSQL one waits for the other).

A merchant's wallet belongs to its owner's group; a store has no wallet of its own (it is paid
into, and pays from, its merchant's), so a store's payments are its merchant's.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.composition import open_sessions
from satvault.config import Settings
from satvault.db import create_engine, utcnow
from satvault.kernel.ids import new_id
from satvault.kyc.errors import LimitExceeded
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.payouts.service import insert_within_daily_limit
from tests.chainenv import LnEnv, api_client
from tests.factories import merchant_wallet
from tests.kyc.helpers import LIMITS, OVERRIDES, RAILS, SAT, Bench, bench, problem
from tests.lightning.test_lightning import fund

pytestmark = pytest.mark.slow  # run first: see tests/conftest.py


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return OVERRIDES


@dataclass
class Shop:
    """A merchant owned by the bench's user: its wallet, funded, and the merchant's key."""

    k: Bench
    merchant_id: str
    wallet: Wallet
    auth: dict[str, str]
    n: itertools.count[int] = field(default_factory=itertools.count)

    async def pay(self, rail: str, sat: int) -> httpx.Response:
        return await self.send(await self.k.destination(rail, sat))

    async def send(self, body: dict[str, Any]) -> httpx.Response:
        return await self.k.c.post(
            f"/api/v1/wallets/{self.wallet.id}/withdrawals",
            headers={**self.auth, "Idempotency-Key": f"shop{next(self.n)}"}, json=body)

    async def view(self) -> dict[str, Any]:
        r = await self.k.c.get(f"/api/v1/wallets/{self.wallet.id}", headers=self.auth)
        assert r.status_code == 200, r.text
        return dict(r.json())


async def shop_of(k: Bench, *, owner: str | None = None, funds_sat: int = 10_000_000) -> Shop:
    """A merchant of ``owner`` (default: the bench's user; "" for a merchant nobody owns)."""
    async with k.env.sessions() as s, s.begin():
        merchant, wallet = await merchant_wallet(
            s, k.user_id if owner is None else owner or None, "Alice's shop")
        _, key = await acc.create_api_key(s, owner_id=merchant,
                                          scopes=["wallet:read", "withdrawals:write"])
    await fund(k.env, wallet, funds_sat * SAT)
    return Shop(k, merchant, wallet, {"Authorization": f"Bearer {key}"})


def other_rail(rail: str) -> str:
    return "lightning" if rail != "lightning" else "internal"


@pytest.mark.parametrize("rail", RAILS)
async def test_the_tier_24h_limit_counts_the_users_wallet_and_the_merchants_it_owns(
        lnenv: LnEnv, rail: str):
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        shop = await shop_of(k)
        # Half the tier-0 day from the user's wallet; the shop still pays a whole
        # transaction's worth (the per-transaction limit is the paying wallet's, as before).
        assert (await k.pay(rail, 10_000)).status_code == 201
        assert (await shop.view())["limits"][rail]["day_left_msat"] == 10_000 * SAT
        body = problem(await shop.pay(rail, 10_001), 422, "kyc-limit-exceeded")
        assert (body["window"], body["left_msat"]) == ("transaction", 10_000 * SAT)
        r = await shop.pay(rail, 10_000)
        assert r.status_code == 201, r.text
        # The day is used up for both wallets: each is refused as its own limit refuses.
        for pay in (k.pay, shop.pay):
            body = problem(await pay(rail, 1_000), 422, "kyc-limit-exceeded")
            assert (body["window"], body["rail"], body["kyc_tier"], body["left_msat"]) == (
                "24h", rail, 0, 0)
        assert (await k.wallet())["limits"][rail]["day_left_msat"] == 0
        assert (await shop.view())["limits"][rail]["max_now_msat"] == 0
        # Each rail still has its own windows.
        assert (await shop.pay(other_rail(rail), 1_000)).status_code == 201
    await env.check()


async def test_the_tier_30d_limit_counts_the_owners_wallets_together(lnenv: LnEnv, clock):
    env = lnenv
    rail = "internal"
    async with api_client(env) as c:
        k = await bench(env, c)
        shop = await shop_of(k)
        for days in range(3):  # 10,000 sat a day from each wallet: 50,000 in three days
            for pay in (k.pay, shop.pay)[:1 if days == 2 else 2]:
                r = await pay(rail, 10_000)
                assert r.status_code == 201, r.text
            clock.advance(hours=25)
            env.network.advance_time(25 * 3600)
        for pay in (shop.pay, k.pay):
            body = problem(await pay(rail, 1_000), 422, "kyc-limit-exceeded")
            assert (body["window"], body["left_msat"]) == ("30d", 0)
        assert (await shop.view())["limits"][rail]["month_left_msat"] == 0
    await env.check()


async def test_a_kyb_tier_governs_the_merchants_wallet_counting_what_its_owner_spent(
        lnenv: LnEnv):
    """The paying wallet's owner's tier sets the limits (a merchant reviewed as a business
    has its own), and what counts against them is the person's: the owner's wallet and
    every merchant of theirs."""
    env = lnenv
    rail = "internal"
    async with api_client(env) as c:
        k = await bench(env, c)
        shop = await shop_of(k)
        r = await c.post(f"/api/v1/admin/kyc/merchant/{shop.merchant_id}/records",
                         headers=k.admin,
                         json={"tier": 1, "decision": "approve", "full_name": "Alice's shop",
                               "documents": ["docstore://registry/1"],
                               "checks": ["company-registry"]})
        assert r.status_code == 201 and r.json()["decision"] == "approved", r.text
        assert (await k.pay(rail, 10_000)).status_code == 201
        assert (await k.pay(rail, 10_000)).status_code == 201
        tier1_day = LIMITS[1][rail][1] // SAT
        # The shop's tier-1 day less what its owner paid today.
        assert (await shop.view())["limits"][rail]["day_left_msat"] == (tier1_day - 20_000) * SAT
        assert (await shop.pay(rail, 100_000)).status_code == 201
        body = problem(await shop.pay(rail, tier1_day - 20_000 - 100_000 + 1), 422,
                       "kyc-limit-exceeded")
        assert (body["window"], body["kyc_tier"]) == ("24h", 1)
        assert body["left_msat"] == (tier1_day - 120_000) * SAT
        # The owner, at tier 0, is past their own day with the shop's payments in it.
        body = problem(await k.pay(rail, 1_000), 422, "kyc-limit-exceeded")
        assert (body["window"], body["kyc_tier"], body["left_msat"]) == ("24h", 0, 0)
    await env.check()


async def test_another_persons_wallets_are_not_counted(lnenv: LnEnv):
    """A merchant nobody owns, and another user's merchant, keep their own windows."""
    env = lnenv
    rail = "internal"
    async with api_client(env) as c:
        k = await bench(env, c)
        ownerless = await shop_of(k, owner="")
        async with env.sessions() as s, s.begin():
            bob = await acc.create_user(s, email="bob@example.com")
        bobs = await shop_of(k, owner=bob.id)
        for pay in (k.pay, k.pay, ownerless.pay, ownerless.pay, bobs.pay, bobs.pay):
            r = await pay(rail, 10_000)
            assert r.status_code == 201, r.text
        for pay in (k.pay, ownerless.pay, bobs.pay):
            problem(await pay(rail, 1_000), 422, "kyc-limit-exceeded")
    await env.check()


class TestPlatformLimit:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {**OVERRIDES, "kyc_tier_limits_msat": {0: LIMITS[2]},
                "withdrawal_daily_limit_msat": 30_000 * SAT}

    async def test_the_rolling_24h_limit_counts_the_owners_wallets_together(
            self, lnenv: LnEnv):
        env = lnenv
        async with api_client(env) as c:
            k = await bench(env, c)
            shop = await shop_of(k)
            assert (await k.pay("onchain", 20_000)).status_code == 201
            assert (await shop.pay("lightning", 10_000)).status_code == 201
            for pay in (shop.pay, k.pay):
                body = problem(await pay("internal", 1_000), 422, "invalid-withdrawal")
                assert "24-hour" in body["detail"] and "0 msat remain" in body["detail"]
            view = await shop.view()
            assert all(v["day_left_msat"] == 0 for v in view["limits"].values())
        await env.check()


@pytest.mark.parametrize("rail", RAILS)
async def test_two_wallets_of_one_user_racing_stop_together_at_the_24h_limit(
        lnenv: LnEnv, rail: str):
    """25 payments from each of two wallets of one user at once, 1,000 sat each, against
    the tier's 24-hour limit of 20,000 sat: 20 go through in all, not 20 per wallet."""
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        shop = await shop_of(k)
        bodies = [await k.destination(rail, 1_000) for _ in range(50)]
        answers = await asyncio.gather(*(
            (k.send if i % 2 else shop.send)(b) for i, b in enumerate(bodies)))
    codes = [a.status_code for a in answers]
    assert codes.count(201) == 20, (codes, [a.text for a in answers if a.status_code >= 500])
    refused = [a for a in answers if a.status_code != 201]
    assert all(a.status_code in (409, 422) for a in refused), [a.text for a in refused]
    async with env.sessions() as s:
        total = (await s.execute(select(func.sum(Withdrawal.amount_msat)).where(
            Withdrawal.wallet_id.in_((env.wallet.id, shop.wallet.id))))).scalar_one()
    assert int(total) == 20_000 * SAT
    await env.check()


async def test_a_check_waits_for_a_withdrawal_from_another_wallet_of_its_person(
        pg_url: str) -> None:
    """PostgreSQL: a withdrawal from the user's wallet, uncommitted at the limit, holds the
    person: a withdrawal from their merchant's wallet waits for it and is then refused; one
    of another person does not wait. (Each wallet's row lock alone let the second through:
    it read the sums before the first committed.)"""
    engine = create_engine(pg_url, pool_size=3)
    sessions = open_sessions(engine)
    settings = Settings(database_url=pg_url, network="regtest", kyc_tier_limits_msat=LIMITS)

    async def write(s: AsyncSession, wallet: Wallet, sat: int) -> None:
        wid, now = new_id("wd"), utcnow()
        await insert_within_daily_limit(s, Withdrawal(
            id=wid, wallet_id=wallet.id, method=WithdrawalMethod.INTERNAL,
            destination=f"lnbcrt-{wid}", script_pubkey=None, amount_msat=sat * SAT,
            fee_reserve_msat=0, fee_msat=0, status=WithdrawalStatus.CONFIRMED, batch_id=None,
            txid=None, hold_id=f"wd:{wid}:internal", invoice_id=None, created_at=now,
            updated_at=now, store_id=None), wallet=wallet, settings=settings)

    async def second(wallet: Wallet) -> None:
        async with sessions() as s, s.begin():
            await write(s, wallet, 1_000)

    try:
        async with sessions() as s, s.begin():
            alice = await acc.create_user(s, email="alice@example.com")
            mine = await acc.ensure_wallet(s, owner_type="user", owner_id=alice.id)
            _, shops = await merchant_wallet(s, alice.id, "Alice's shop")
            bob = await acc.create_user(s, email="bob@example.com")
            bobs = await acc.ensure_wallet(s, owner_type="user", owner_id=bob.id)
        async with sessions() as first, first.begin():
            for _ in range(2):  # the whole tier-0 day
                await write(first, mine, 10_000)
            waiting = asyncio.create_task(second(shops))
            await asyncio.wait_for(second(bobs), 10)  # another person: no wait
            await asyncio.sleep(0.5)
            assert not waiting.done()
        # Committed: the merchant's withdrawal goes on, and counts the user's.
        with pytest.raises(LimitExceeded) as refused:
            await asyncio.wait_for(waiting, 10)
        assert (refused.value.window, refused.value.left_msat) == ("24h", 0)
    finally:
        await engine.dispose()
