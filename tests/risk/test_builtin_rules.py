"""Each built-in rule, with its features computed from the database as in production, in
three cases: not triggered (approve), triggered with a score in the review band, triggered
with a score at the reject threshold. The condition is the shipped one; only the score and
the thresholds are set per case, as an operator would."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from satvault.risk.rules import Outcome
from tests.risk.conftest import ADDR, SAT, Ctx, default_doc

BTC = 100_000_000 * SAT
OTHER = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def only(rule_id: str, score: int) -> dict[str, Any]:
    doc = default_doc()
    rule = copy.deepcopy(next(r for r in doc["rules"] if r["id"] == rule_id))
    if "score_field" not in rule:
        rule["score"] = score
    doc["rules"] = [rule]
    doc["thresholds"] = {"review": 50, "reject": 100}
    return doc


Setup = Callable[[Ctx, bool], Awaitable[Any]]


async def zscore(ctx: Ctx, hit: bool, big: int) -> Any:
    for i in range(10):  # a steady history: 10 000 .. 10 900 sat
        await ctx.out((10_000 + 100 * i) * SAT, ago=timedelta(days=1 + i))
    return ctx.event((big if hit else 10_500) * SAT)


async def z_high(ctx: Ctx, hit: bool) -> Any:
    return await zscore(ctx, hit, 12_000)  # ~4 standard deviations


async def z_extreme(ctx: Ctx, hit: bool) -> Any:
    return await zscore(ctx, hit, 20_000)


async def v_count_1h(ctx: Ctx, hit: bool) -> Any:
    await ctx.out(1_000 * SAT, n=30 if hit else 29, ago=timedelta(minutes=20))
    return ctx.event(1_000 * SAT)


async def v_count_24h(ctx: Ctx, hit: bool) -> Any:
    await ctx.out(1_000 * SAT, n=100 if hit else 99, ago=timedelta(hours=5))
    return ctx.event(1_000 * SAT)


async def v_sum_24h(ctx: Ctx, hit: bool) -> Any:
    await ctx.out(10 * BTC, ago=timedelta(hours=23))
    await ctx.out(10 * BTC, ago=timedelta(hours=25))  # outside the window
    return ctx.event(1 * SAT if hit else 0)


async def v_sum_7d(ctx: Ctx, hit: bool) -> Any:
    await ctx.out(50 * BTC, ago=timedelta(days=6))
    await ctx.out(50 * BTC, ago=timedelta(days=8))
    return ctx.event(1 * SAT if hit else 0)


async def new_address(ctx: Ctx, hit: bool) -> Any:
    from satvault.risk.lists import load_labels
    if not hit:  # an index dated it 30 days back
        seen = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
        async with ctx.sessions() as s, s.begin():
            await load_labels(s, text=f"address,label,score,first_seen\n{ADDR},exchange,0,{seen}",
                              actor="user:admin-a")
    return ctx.event(1_000 * SAT)  # undated: scored as new


async def structuring(ctx: Ctx, hit: bool) -> Any:
    # Threshold 0.01 BTC, band 10 %: three payments at 0.0095 BTC across three rails.
    amount = 950_000 * SAT if hit else 800_000 * SAT
    await ctx.into(amount)  # in, e.g. a deposit
    from satvault.payouts.models import WithdrawalMethod
    await ctx.out(amount, ago=timedelta(days=2), method=WithdrawalMethod.LIGHTNING)
    return ctx.event(amount, rail="onchain")


async def rapid(ctx: Ctx, hit: bool) -> Any:
    await ctx.into(100_000 * SAT)
    return ctx.event(100_000 * SAT if hit else 1_000_000 * SAT)


async def first_dest(ctx: Ctx, hit: bool) -> Any:
    if not hit:
        await ctx.out(1_000 * SAT, destination=ADDR, ago=timedelta(days=40))
    return ctx.event(1_000 * SAT)


async def approve(ctx: Ctx, owner_type: str, owner_id: str, tier: int) -> None:
    """An approved KYC (KYB) record: what sets a tier."""
    from satvault.kyc import service as kyc
    async with ctx.sessions() as s, s.begin():
        await kyc.create_record(s, kyc.RecordRequest(
            owner_type=owner_type, owner_id=owner_id, tier=tier, decision="approve",
            full_name="Alice Example", documents=["doc://1"], checks=["id-document"],
            reviewer="user:admin-a"), max_tier=2, screening_threshold=88)


async def kyc0(ctx: Ctx, hit: bool) -> Any:
    if not hit:  # an approved record (the tier is the records', not users.kyc_tier)
        await approve(ctx, "user", ctx.wallet.owner_id, 1)
    return ctx.event(2_000_000 * SAT)


CASES: dict[str, Setup] = {
    "amount_zscore_high": z_high, "amount_zscore_extreme": z_extreme,
    "velocity_count_1h": v_count_1h, "velocity_count_24h": v_count_24h,
    "velocity_sum_24h": v_sum_24h, "velocity_sum_7d": v_sum_7d,
    "new_onchain_address": new_address, "structuring": structuring,
    "rapid_movement": rapid, "first_to_destination": first_dest, "kyc0_large": kyc0,
}


def test_every_builtin_rule_has_cases():
    shipped = {r["id"] for r in default_doc()["rules"]}
    assert shipped == set(CASES) | {"labelled_address", "sanctioned_address"}


@pytest.mark.parametrize("rule_id", sorted(CASES))
@pytest.mark.parametrize(("hit", "score", "expected"), [
    (False, 100, Outcome.APPROVE), (True, 60, Outcome.REVIEW), (True, 100, Outcome.REJECT)])
async def test_builtin_rule(ctx: Ctx, rule_id: str, hit: bool, score: int, expected: Outcome):
    await ctx.live(only(rule_id, score))
    event = await CASES[rule_id](ctx, hit)
    s = await ctx.screen(event)
    [result] = s.verdict.results
    assert (result.id, result.matched) == (rule_id, hit), result
    assert s.outcome == expected, (s.verdict, {k: v for k, v in s.features.items()
                                               if not k.startswith("agg.")})


@pytest.mark.parametrize(("label_score", "expected"), [
    (None, Outcome.APPROVE), (60, Outcome.REVIEW), (150, Outcome.REJECT)])
async def test_label_lists_score_by_label(ctx: Ctx, label_score: int | None,
                                          expected: Outcome):
    from satvault.risk.lists import load_labels
    await ctx.live(only("labelled_address", 0))
    rows = ["address,label,score,source", f"{OTHER},gambling,40,op"]
    if label_score is not None:  # two lists name it: their scores add up
        rows += [f"{ADDR},mixer,{label_score - 10},op", f"{ADDR},scam,10,op"]
    async with ctx.sessions() as s, s.begin():
        await load_labels(s, text="\n".join(rows), actor="user:admin-a")
    s = await ctx.screen(ctx.event(1_000 * SAT))
    assert s.outcome == expected
    if label_score is not None:
        assert s.features["destination_labels"] == ["mixer", "scam"]
        assert s.verdict.score == label_score


@pytest.mark.parametrize("listed", [False, True])
async def test_sanctioned_is_a_reject_whatever_the_score(ctx: Ctx, listed: bool):
    from satvault.risk.lists import refresh_sanctions
    doc = only("sanctioned_address", 0)  # even a rule that adds nothing
    doc["thresholds"] = {"review": 900, "reject": 1000}
    await ctx.live(doc)
    async with ctx.sessions() as s, s.begin():
        await refresh_sanctions(s, text=f"{ADDR}\n" if listed else f"{OTHER}\n",
                                actor="user:admin-a")
    s = await ctx.screen(ctx.event(1_000 * SAT))
    assert s.verdict.sanctioned is listed
    assert s.outcome == (Outcome.REJECT if listed else Outcome.APPROVE)


async def test_kyc_tier_is_the_paying_owners_own_from_its_records(ctx: Ctx):
    """Found from outside: ``kyc_tier`` read the ``users.kyc_tier`` cache, and for a
    merchant its owning user's, so a merchant approved at KYB tier 1 whose owner is tier 0
    was scored as tier 0 (``kyc0_large`` matched). It is now the tier the limits enforce:
    the paying wallet's owner's latest approved record; a hand-edited cache moves nothing."""
    from sqlalchemy import update

    from satvault.accounts import service as acc
    from satvault.accounts.models import User

    await ctx.live(only("kyc0_large", 100))
    async with ctx.sessions() as s, s.begin():
        shop = await acc.create_merchant(s, name="Shop", owner_user_id=ctx.wallet.owner_id)
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=shop.id)
    merchant = Ctx(ctx.sessions, wallet)
    await approve(ctx, "merchant", shop.id, 1)
    s = await merchant.screen(merchant.event(2_000_000 * SAT))
    assert s.features["kyc_tier"] == 1 and s.outcome == Outcome.APPROVE, s.verdict
    # The owner, still tier 0, whatever the cache says.
    async with ctx.sessions() as db, db.begin():
        await db.execute(update(User).where(User.id == ctx.wallet.owner_id).values(kyc_tier=2))
    s = await ctx.screen(ctx.event(2_000_000 * SAT))
    assert s.features["kyc_tier"] == 0 and s.outcome == Outcome.REJECT, s.verdict
    # Lowered by a later approval, the merchant is tier 0 again.
    await approve(ctx, "merchant", shop.id, 0)
    s = await merchant.screen(merchant.event(2_000_000 * SAT))
    assert s.features["kyc_tier"] == 0 and s.outcome == Outcome.REJECT, s.verdict
