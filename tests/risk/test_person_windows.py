"""The risk rules count a person's wallets together (migration 0067), as the withdrawal limits
do since 0061: a user's own wallet and the wallets of the merchants the user owns. Found from
the gap list: the velocity windows, the distinct destinations and the structuring band counted
one wallet's payments, so payments spread over one's merchants stayed under a velocity rule on
each.

``person.agg.*``, ``person.velocity.*`` and ``person.structuring_count`` are the wallet's
features over the person's wallets; the wallet's own keep their meaning (a shop's amount
z-score is against the shop's history). The shipped rule set's velocity and structuring rules
name the person's. Two wallets of one person racing against a person's rule are screened one
after the other (the person's advisory lock on PostgreSQL, SQLite's one writer)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.composition import open_sessions
from satvault.db import create_engine, utcnow
from satvault.lightning.invoices import InvoiceListener, create_invoice
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.risk import RiskRejected
from satvault.risk import service as risk
from satvault.risk.models import RiskDecision, RiskFrozenDeposit
from satvault.risk.rules import Params
from satvault.withdrawals.service import PreparedDestination, withdraw
from tests.chainenv import Env, LnEnv, api_client
from tests.factories import merchant_wallet
from tests.kyc.helpers import LIMITS, bench, problem
from tests.kyc.test_owner_limits import shop_of
from tests.lightning.test_lightning import fund
from tests.risk.conftest import SAT, Ctx
from tests.risk.test_screening_path import _function_matches_query
from tests.risk.test_withdrawals import DEST, make_live


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    # 24 payments of one person at once in the deadlock test: room for all in flight.
    return {"kyc_tier_limits_msat": {0: LIMITS[2]}, "rate_limit_create": "10000/second",
            "withdrawal_daily_limit_msat": 10**15, "internal_payments_in_flight": 64}


def person_rule(field: str, above: int, score: int = 100) -> dict[str, Any]:
    return {"thresholds": {"review": 50, "reject": 100}, "rules": [
        {"id": "person_rule", "score": score, "when": {"all": [
            {"field": "direction", "op": "eq", "value": "out"},
            {"field": field, "op": "gt", "value": above}]}}]}


async def test_the_shipped_velocity_rule_holds_payments_spread_over_the_owners_wallets(
        lnenv: LnEnv):
    """The shipped rule set holds the 31st payment out within an hour for review: 16 from
    the user's wallet and 15 from their shop's were 16 and 15 to it before (approved)."""
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        shop = await shop_of(k)
        for i in range(30):
            r = await (k.pay if i % 2 else shop.pay)("internal", 10)
            assert r.status_code == 201 and r.json()["status"] == "confirmed", (i, r.text)
        for pay in (k.pay, shop.pay):
            r = await pay("internal", 10)
            assert r.status_code == 201 and r.json()["status"] == "review", r.text
        async with env.sessions() as s:
            held = (await s.execute(select(RiskDecision).where(
                RiskDecision.outcome == "review").order_by(RiskDecision.at))).scalars().all()
        why = (await c.get(f"/api/v1/admin/risk/decisions/{held[0].id}",
                           headers=k.admin)).json()
    hit = {r["id"]: r["inputs"] for r in why["rules"] if r["matched"]}
    assert hit["velocity_count_1h"]["person.velocity.count.1h"] == 31
    assert why["features"]["velocity.count.1h"] == 16  # the wallet's own, beside it
    assert why["features"]["person.wallets"] == 2
    await env.check()


async def test_a_rule_on_the_persons_window_refuses_across_wallets_and_persons_apart(
        lnenv: LnEnv):
    """A rule naming ``person.velocity.count.1h`` refuses the payment that takes the person
    past it, from either wallet; another person's wallets, and a merchant nobody owns, keep
    windows of their own."""
    env = lnenv
    async with api_client(env) as c:
        k = await bench(env, c)
        r = await c.post("/api/v1/admin/risk/rule-sets", headers=k.admin,
                         json={"rules": person_rule("person.velocity.count.1h", 3)})
        assert r.status_code == 201, r.text
        async with env.sessions() as s, s.begin():
            second = await acc.create_user(s, email="second@example.com", is_admin=True)
            _, key = await acc.create_api_key(s, owner_id=second.id, scopes=["admin"])
        r = await c.post(f"/api/v1/admin/risk/rule-sets/{r.json()['version']}/approve",
                         headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        shop = await shop_of(k)
        ownerless = await shop_of(k, owner="")
        async with env.sessions() as s, s.begin():
            bob = await acc.create_user(s, email="bob@example.com")
        bobs = await shop_of(k, owner=bob.id)
        for pay in (k.pay, shop.pay, k.pay, ownerless.pay, ownerless.pay, bobs.pay):
            r = await pay("internal", 10)
            assert r.status_code == 201, r.text
        for pay in (shop.pay, k.pay):
            problem(await pay("internal", 10), 403, "risk-rejected")
        for pay in (ownerless.pay, bobs.pay, bobs.pay):  # 3 each: not past the rule
            r = await pay("internal", 10)
            assert r.status_code == 201, r.text
    await env.check()


@pytest.fixture
async def person(sessions) -> tuple[Ctx, Ctx]:
    """A user's wallet and their merchant's."""
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="risk@example.com")
        mine = await acc.ensure_wallet(s, owner_type="user", owner_id=user.id)
        _, shop = await merchant_wallet(s, user.id)
    return Ctx(sessions, mine), Ctx(sessions, shop)


async def test_distinct_destinations_and_the_structuring_band_span_the_persons_wallets(
        person: tuple[Ctx, Ctx]):
    """A destination paid from both wallets is one destination of the person; the band's
    payments of both wallets, out and in, count together; a held one released late counts
    from its release. The wallet's own features are as before."""
    mine, shop = person
    band = 95_000 * SAT  # under a 100,000-sat threshold
    await mine.out(SAT, ago=timedelta(minutes=10), destination="bc1qa")
    await shop.out(SAT, ago=timedelta(minutes=20), destination="bc1qa")
    await shop.out(SAT, ago=timedelta(hours=3), destination="bc1qb")
    await shop.out(SAT, ago=timedelta(days=3), destination="bc1qc", released_ago=timedelta(
        minutes=30))
    await mine.out(SAT, ago=timedelta(days=10), destination="bc1qc")
    await shop.out(band, ago=timedelta(days=2), destination="bc1qd")
    await shop.into(band)
    await mine.out(band, ago=timedelta(days=1), destination="bc1qa")
    await shop.out(SAT, ago=timedelta(days=40), destination="bc1qe")  # outside 30 days
    doc = {"thresholds": {"review": 50, "reject": 100}, "rules": [],
           "params": {"structuring_threshold_msat": 100_000 * SAT}}
    await mine.live(doc)
    f = (await mine.screen(mine.event(band, destination="bc1qz"))).features
    windows = ("1h", "24h", "7d", "30d")
    # a (both wallets), c (released 30 min ago from the shop), b, then d
    assert [f[f"person.agg.out.counterparties.{w}"] for w in windows] == [2, 3, 4, 4]
    assert [f[f"agg.out.counterparties.{w}"] for w in windows] == [1, 1, 1, 2]
    assert [f[f"person.agg.out.count.{w}"] for w in windows] == [3, 4, 6, 7]
    assert [f[f"person.velocity.count.{w}"] for w in windows] == [4, 5, 7, 8]
    assert f["person.agg.out.sum.30d"] == 5 * SAT + 2 * band
    assert f["person.agg.in.count.1h"] == 1 and f["agg.in.count.1h"] == 0
    assert f["person.structuring_count"] == 4 and f["structuring_count"] == 2
    assert f["person.wallets"] == 2
    g = (await shop.screen(shop.event(SAT, destination="bc1qa"))).features
    assert [g[f"person.agg.out.counterparties.{w}"] for w in windows] == [2, 3, 4, 4]
    assert g["person.structuring_count"] == 3 and g["person.wallets"] == 2


async def test_a_person_alone_has_the_wallets_features(ctx: Ctx):
    """A user without merchants: the person's features are the wallet's."""
    await ctx.out(3 * SAT, ago=timedelta(minutes=3), destination="bc1qa")
    await ctx.out(5 * SAT, ago=timedelta(days=3), destination="bc1qb")
    await ctx.into(7 * SAT)
    f = (await ctx.screen(ctx.event(SAT))).features
    for key in [k for k in f if k.startswith("agg.") or k.startswith("velocity.")]:
        assert f[f"person.{key}"] == f[key], key
    assert f["person.structuring_count"] == f["structuring_count"]
    assert f["person.wallets"] == 1


async def test_postgresql_function_reads_the_persons_features_as_the_query(
        person: tuple[Ctx, Ctx], sessions):
    """The function's person columns (the other wallets' roll-ups, their credits read
    without folding them) against the row-by-row query, for each wallet of a person with
    shared, released, failed and old payments and credits on both sides."""
    mine, shop = person
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no stored functions and runs the query")
    async with sessions() as s, s.begin():
        m2 = await acc.create_merchant(s, name="Shop 2", owner_user_id=mine.wallet.owner_id)
        third = Ctx(sessions, await acc.ensure_wallet(s, owner_type="merchant",
                                                      owner_id=m2.id))
    await mine.screen(mine.event(SAT))  # the shipped rule set becomes live
    now = utcnow()
    for i, who in enumerate((mine, shop, third)):
        await who.out(95_000 * SAT, ago=timedelta(hours=i + 1), destination="bc1qshared")
        await who.out((i + 1) * SAT, ago=timedelta(days=i + 2), destination=f"bc1q{i}")
        await who.out(SAT, ago=timedelta(days=5), destination="bc1qheld",
                      released_ago=timedelta(minutes=i + 1))
        await who.out(SAT, ago=timedelta(days=45), destination="bc1qold")
        await who.into((i + 3) * SAT)
    await shop.into(95_000 * SAT)
    # credits after the shop's last fold: read without folding them
    await shop.into(4 * SAT)
    await third.into(97_000 * SAT)
    params = Params(structuring_threshold_msat=100_000 * SAT)
    for who in (mine, shop, third):
        for ev in (who.event(SAT), dataclasses.replace(who.event(2 * SAT), direction="in")):
            got = await _function_matches_query(who, ev, params, now, lock=False)
            assert got["person.wallets"] == 3
            assert got["person.out.counterparties.30d"] == 5
            assert got["person.out.count.30d"] == 9 and got["person.in.count.30d"] >= 5


async def test_two_wallets_of_one_person_racing_cross_a_persons_rule_exactly(env: Env):
    """Payments from a user's wallet and their merchant's at once against a rule on the
    person's 1-hour count: exactly the allowed number goes through in all."""
    postgres = env.sessions.kw["bind"].dialect.name == "postgresql"
    racers, allowed = (80, 20) if postgres else (24, 6)
    await make_live(env, person_rule("person.velocity.count.1h", allowed))
    async with env.sessions() as s, s.begin():
        _, shop = await merchant_wallet(s, env.wallet.owner_id)
    for w in (env.wallet, shop):
        await fund(env, w, 10_000_000 * SAT)
    prepared = PreparedDestination("onchain", DEST, None, 1_000 * SAT)

    async def one(wallet: Wallet) -> str:
        async def wallet_for(_s: Any) -> Wallet:
            return wallet
        try:
            async with env.sessions() as s, s.begin():
                await withdraw(s, settings=env.settings, lightning=None,
                               wallet_for=wallet_for, prepared=prepared)
            return "approve"
        except RiskRejected as exc:
            async with env.sessions() as s, s.begin():
                await exc.record_after_rollback(s)
            return "reject"

    results = await asyncio.gather(*(one((env.wallet, shop)[i % 2]) for i in range(racers)))
    assert results.count("approve") == allowed, results
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Withdrawal))
                ).scalar_one() == allowed
    await env.check()


async def test_deposits_into_two_wallets_of_one_person_racing_cross_a_persons_rule_exactly(
        lnenv: LnEnv):
    """Lightning deposits into a user's wallet and their shop's, credited at once against a
    rule on the person's 1-hour count of money in: exactly the allowed number are approved,
    the rest land frozen (each screening sees the ones credited before it, as payments out
    do; before, a deposit read the person's money in as committed and racing ones each
    missed the others)."""
    env = lnenv
    postgres = env.sessions.kw["bind"].dialect.name == "postgresql"
    racers, allowed = (24, 6) if postgres else (8, 3)
    doc = person_rule("person.velocity.count.1h", allowed, score=50)
    doc["rules"][0]["when"]["all"][0]["value"] = "in"
    await make_live(env, doc)
    async with env.sessions() as s, s.begin():
        _, shop = await merchant_wallet(s, env.wallet.owner_id)
        bills = [await create_invoice(s, backend=env.runtime.lightning,
                                      wallet=(env.wallet, shop)[i % 2],
                                      amount_msat=(1_000 + i) * SAT) for i in range(racers)]
    for bill in bills:
        env.network.pay("customer1", bill.bolt11)
    listener = InvoiceListener(env.sessions, env.runtime.lightning, node="lnd",
                               deposit_screen=env.runtime.deposit_screen)
    assert all(await asyncio.gather(*(listener.handle(b.payment_hash, b.amount_msat, 0)
                                      for b in bills)))
    async with env.sessions() as s:
        outcomes = list((await s.execute(select(RiskDecision.outcome).where(
            RiskDecision.subject_type == "deposit"))).scalars())
        frozen = (await s.execute(select(func.count()).select_from(RiskFrozenDeposit))
                  ).scalar_one()
    assert sorted(outcomes).count("approve") == allowed, outcomes
    assert frozen == racers - allowed
    await env.check()


async def test_deposits_and_payments_of_one_person_at_once_never_deadlock(lnenv: LnEnv):
    """Every lock order a person's money takes, at once: internal payments between the
    user's wallet and their shop's both ways, payments out of both to another person, and
    deposits from outside into both (each screening takes the wallet's row, then the person;
    the ledger's accounts after). All succeed, the books balance, and PostgreSQL detected no
    deadlock (a deadlock is retried, so only its counter shows it)."""
    env = lnenv
    postgres = env.sessions.kw["bind"].dialect.name == "postgresql"

    async def deadlocks() -> int:
        if not postgres:
            return 0
        # A backend reports its counters when it exits (or long after): close the pool's.
        await env.sessions.kw["bind"].dispose()
        await asyncio.sleep(0.5)
        async with env.sessions() as s:
            return int((await s.execute(text(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            )).scalar_one())

    async with api_client(env) as c:
        k = await bench(env, c)
        shop = await shop_of(k)
        async with env.sessions() as s, s.begin():
            bills = {w.id: [await create_invoice(s, backend=env.runtime.lightning, wallet=w,
                                                 amount_msat=(100 + i) * SAT)
                            for i in range(8)] for w in (env.wallet, shop.wallet)}
            outside = [await create_invoice(s, backend=env.runtime.lightning, wallet=w,
                                            amount_msat=(200 + i) * SAT)
                       for i in range(8) for w in (env.wallet, shop.wallet)]
        for bill in outside:
            env.network.pay("customer1", bill.bolt11)
        listener = InvoiceListener(env.sessions, env.runtime.lightning, node="lnd",
                                   deposit_screen=env.runtime.deposit_screen)
        before = await deadlocks()
        work = [k.send({"destination": b.bolt11}) for b in bills[shop.wallet.id]]
        work += [shop.send({"destination": b.bolt11}) for b in bills[env.wallet.id]]
        work += [k.pay("internal", 10) for _ in range(4)]
        work += [shop.pay("internal", 10) for _ in range(4)]
        work += [listener.handle(b.payment_hash, b.amount_msat, 0) for b in outside]
        results = await asyncio.gather(*work)
    after = await deadlocks()
    answers = [r for r in results if not isinstance(r, bool)]
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers]
    assert all(r for r in results if isinstance(r, bool))
    assert after == before
    await env.check()


async def test_a_screening_waits_for_a_payment_of_another_wallet_of_its_person(
        pg_url: str) -> None:
    """PostgreSQL: an uncommitted payment out of the user's wallet holds the person: the
    screening of a payment out of their merchant's wallet waits for it, then counts it, and
    so does the screening of a deposit into it; one of another person does not wait."""
    engine = create_engine(pg_url, pool_size=4)
    sessions = open_sessions(engine)
    try:
        async with sessions() as s, s.begin():
            alice = await acc.create_user(s, email="alice@example.com")
            mine = await acc.ensure_wallet(s, owner_type="user", owner_id=alice.id)
            _, shops = await merchant_wallet(s, alice.id, "Alice's shop")
            bob = await acc.create_user(s, email="bob@example.com")
            bobs = await acc.ensure_wallet(s, owner_type="user", owner_id=bob.id)
        a, b, other = Ctx(sessions, mine), Ctx(sessions, shops), Ctx(sessions, bobs)
        await other.screen(other.event(SAT))  # the shipped rule set becomes live

        async def screened(ctx: Ctx, direction: str = "out") -> dict[str, Any]:
            return (await ctx.screen(ctx.event(SAT, direction=direction))).features

        async with sessions() as first, first.begin():
            await risk.screen(first, a.event(SAT))
            now = utcnow()
            first.add(Withdrawal(
                id="wd_first", wallet_id=mine.id, method=WithdrawalMethod.LIGHTNING,
                destination="lnbc1", script_pubkey=None, amount_msat=SAT, fee_reserve_msat=0,
                fee_msat=None, status=WithdrawalStatus.PENDING, batch_id=None, txid=None,
                hold_id="wd:first", created_at=now, updated_at=now))
            await first.flush()
            waiting = [asyncio.create_task(screened(b, d)) for d in ("out", "in")]
            await asyncio.wait_for(screened(other), 10)  # another person: no wait
            await asyncio.sleep(0.5)
            assert not any(w.done() for w in waiting)
        for w in waiting:
            assert (await asyncio.wait_for(w, 10))["person.agg.out.count.1h"] == 1
    finally:
        await engine.dispose()
