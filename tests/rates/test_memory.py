"""The rates a ``RateService`` accepted are remembered in the database, so the movement bound
holds across a restart and between processes, and a slow drift in steps under that bound is
caught by a second, day-long bound on the range of what was accepted. Each "process" here is
a ``RateService`` of its own over the one database; the windows run on the process clock
(``clock``), the TTL on each service's own monotonic clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.audit.models import AuditEvent
from satvault.rates import FixedRateSource, RateRefused, RateService, SourceUnreachable
from satvault.rates.memory import DbRateMemory, accept_rate, recall
from satvault.rates.models import AcceptedRate
from tests.rates.fakes import FakeClock, ScriptedSource
from tests.statements import count_statements

HOUR = 3600


def process(sessions: async_sessionmaker[AsyncSession], *prices: str, name: str = "kraken",
            ttl: float = 0, **bounds: float) -> RateService:
    """One process's rate service over the shared database, its source answering ``prices``
    in turn (the last one from then on)."""
    return RateService([ScriptedSource(name, *prices)], ttl_seconds=ttl, clock=FakeClock(),
                       memory=DbRateMemory(sessions), **bounds)  # type: ignore[arg-type]


async def rows(sessions: async_sessionmaker[AsyncSession], currency: str = "USD") -> list:
    async with sessions() as s:
        return list((await s.execute(
            select(AcceptedRate.seq, AcceptedRate.minor_per_btc, AcceptedRate.accepted_by)
            .where(AcceptedRate.currency == currency).order_by(AcceptedRate.seq))).all())


async def test_a_restart_still_refuses_a_jump_from_the_last_accepted_rate(sessions, clock):
    """60000 accepted, then the process restarts: its successor's first rate, 75000 (+25%),
    is refused as the one before the restart would have refused it."""
    before = process(sessions, "60000")
    assert (await before.rate("USD")).minor_per_btc == 6_000_000
    await before.close()
    clock.advance(5 * 60)
    after = process(sessions, "75000")
    with pytest.raises(RateRefused, match=r"moved 25\.00% from 60000\.00 accepted 5 min ago"):
        await after.rate("USD")
    clock.advance(HOUR)  # the move window has passed; the day's range is 25%, under 30%
    assert (await after.rate("USD")).minor_per_btc == 7_500_000
    assert [r.minor_per_btc for r in await rows(sessions)] == [6_000_000, 7_500_000]


async def test_two_processes_share_the_bound(sessions, clock):
    """Whichever process accepted last sets the reference for both."""
    a = process(sessions, "60000", "75000", "62000")
    b = process(sessions, "75000", "61000", "75000")
    assert (await a.rate("USD")).minor_per_btc == 6_000_000
    with pytest.raises(RateRefused, match=r"moved 25\.00%"):
        await b.rate("USD")  # b has never accepted a rate itself
    clock.advance(60)
    assert (await b.rate("USD")).minor_per_btc == 6_100_000
    with pytest.raises(RateRefused, match=r"moved 22\.96% from 61000\.00"):
        await a.rate("USD")  # against b's 61000, not a's own 60000
    assert (await a.rate("USD")).minor_per_btc == 6_200_000
    with pytest.raises(RateRefused, match=r"from 62000\.00"):
        await b.rate("USD")
    assert [r.minor_per_btc for r in await rows(sessions)] == [6_000_000, 6_100_000, 6_200_000]


async def test_a_slow_drift_under_the_move_bound_is_refused(sessions, clock):
    """+15% every 20 minutes, each step under the 20% move bound, alternating between two
    processes: refused once the rates accepted within the day would span more than 30%."""
    a = process(sessions, "60000", "79350")
    b = process(sessions, "69000", "75000")
    assert (await a.rate("USD")).minor_per_btc == 6_000_000
    clock.advance(20 * 60)
    assert (await b.rate("USD")).minor_per_btc == 6_900_000
    clock.advance(20 * 60)
    with pytest.raises(RateRefused, match=r"span 32\.25% \(60000\.00 to 79350\.00\)"):
        await a.rate("USD")  # +15% of b's 69000, but 60000 was accepted 40 min ago
    clock.advance(HOUR)  # outside the move window, still inside the day
    with pytest.raises(RateRefused, match=r"span 32\.25%"):
        await a.rate("USD")
    assert (await b.rate("USD")).minor_per_btc == 7_500_000  # 25% of the day's lowest: fine


async def test_a_drift_is_accepted_once_the_day_has_passed(sessions, clock):
    a = process(sessions, "60000", "70000", "80000", "80000")
    assert (await a.rate("USD")).minor_per_btc == 6_000_000
    clock.advance(2 * HOUR)
    assert (await a.rate("USD")).minor_per_btc == 7_000_000  # 16.7%: within both bounds
    clock.advance(2 * HOUR)
    with pytest.raises(RateRefused, match=r"span 33\.34%"):
        await a.rate("USD")
    clock.advance(20 * HOUR + 1)  # 60000 is more than a day old, 70000 is not
    assert (await a.rate("USD")).minor_per_btc == 8_000_000


async def test_a_rate_after_days_without_one_is_bounded_by_the_last(sessions, clock):
    """Nothing accepted for two days (nobody priced USD over a weekend; the process
    restarted): the first rate since may be 30% a day from the last one, 60% after two days,
    not anything at all as before."""
    before = process(sessions, "60000")
    await before.rate("USD")
    await before.close()
    clock.advance(2 * 24 * HOUR + 60)
    after = process(sessions, "100000", "96000")
    with pytest.raises(RateRefused, match=r"moved 66\.67% from 60000\.00, the last rate "
                                          r"accepted, 48 h ago \(limit 60\.0\d% after"):
        await after.rate("USD")
    assert (await after.rate("USD")).minor_per_btc == 9_600_000  # +60%: within
    assert [r.minor_per_btc for r in await rows(sessions)] == [9_600_000]  # the last one kept


async def test_the_gap_bound_in_one_process_without_a_database(clock):
    service = RateService([ScriptedSource("a", "60000", "79000", "77000")], ttl_seconds=0)
    await service.rate("USD")
    clock.advance(24 * HOUR + 1)
    with pytest.raises(RateRefused, match=r"moved 31\.67% .* 24 h ago \(limit 30\.00%"):
        await service.rate("USD")
    assert (await service.rate("USD")).minor_per_btc == 7_700_000


async def test_the_drift_bound_holds_in_one_process_without_a_database(clock):
    """The same bounds over a service's own memory (a service built without a database)."""
    service = RateService([ScriptedSource("a", "60000", "69000", "79350")], ttl_seconds=0)
    await service.rate("USD")
    clock.advance(20 * 60)
    await service.rate("USD")
    clock.advance(20 * 60)
    with pytest.raises(RateRefused, match=r"span 32\.25%"):
        await service.rate("USD")


async def test_no_bound_when_the_windows_are_zero(sessions, clock):
    service = process(sessions, "60000", "90000", move_window_seconds=0,
                      drift_window_seconds=0)
    await service.rate("USD")
    assert (await service.rate("USD")).minor_per_btc == 9_000_000
    assert await rows(sessions) == []  # nothing to bound: nothing read or written


async def test_the_database_is_read_only_on_a_cache_miss_and_old_rows_are_pruned(
        sessions, clock):
    """A cached rate costs no statement; a fetch reads and records in one short
    transaction; rows older than the longest window are deleted as new ones come."""
    engine = sessions.kw["bind"]
    service = RateService([ScriptedSource("a", "60000")], ttl_seconds=60,
                          clock=(mono := FakeClock()), memory=DbRateMemory(sessions))
    with count_statements(engine) as n:
        await service.rate("USD")
    assert n.transactions == 1 and n.total <= 4, str(n)
    with count_statements(engine) as n:
        for _ in range(5):
            await service.rate("USD")
    assert n.total == 0
    for _ in range(30):  # a month, one fetch a day
        mono.advance(61)
        clock.advance(HOUR * 24 + 1)
        await service.rate("USD")
    assert len(await rows(sessions)) == 1  # only the last day's rates are kept


async def test_two_processes_accepting_at_once_are_serialised(sessions, clock):
    """On an empty history, two processes fetch at the same moment, one 60000 and the other
    80000 (each beyond the 20% bound from the other): exactly one is accepted and the other
    is refused against it (each checked only against what was there before would take both).
    The same price four times: all are kept, in order, nothing fails."""
    for currency in ("USD", "EUR", "GBP", "CHF", "CAD", "AUD", "SEK", "NOK"):
        a = process(sessions, "60000", name="a")
        b = process(sessions, "80000", name="b")
        results = await asyncio.gather(a.rate(currency), b.rate(currency),
                                       return_exceptions=True)
        accepted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, RateRefused)]
        assert len(accepted) == 1 and len(refused) == 1, results
        assert [r.minor_per_btc for r in await rows(sessions, currency)] == [
            accepted[0].minor_per_btc]
    same = [process(sessions, "60000", name=f"p{i}") for i in range(4)]
    results = await asyncio.gather(*(p.rate("JPY") for p in same), return_exceptions=True)
    assert all(r.minor_per_btc == 60_000 for r in results), results  # type: ignore[union-attr]
    assert [r.seq for r in await rows(sessions, "JPY")] == [1, 2, 3, 4]


async def test_an_operator_accepts_a_genuine_move(sessions, clock):
    """A crash of 40% is refused by both bounds; an operator accepts the current median,
    audited, and it becomes the only reference."""
    service = process(sessions, "60000", "36000")
    await service.rate("USD")
    clock.advance(HOUR * 2)
    with pytest.raises(RateRefused):
        await service.rate("USD")
    median, vouched = await service.median("USD")  # the sources' agreement, no bound
    assert (median.minor_per_btc, vouched) == (3_600_000, 1)
    async with sessions() as s, s.begin():
        before = await accept_rate(s, rate=median, actor="user:usr_ops",
                                   reason="the market fell")
    assert before.last == 6_000_000
    assert (await service.rate("USD")).minor_per_btc == 3_600_000
    assert [(r.minor_per_btc, r.accepted_by) for r in await rows(sessions)] == [
        (3_600_000, "user:usr_ops"), (3_600_000, None)]
    async with sessions() as s:
        [audit] = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "rate.accept"))).scalars().all()
        now = await recall(s, "USD", since=clock.now() - timedelta(days=1))
        count = (await s.execute(select(func.count()).select_from(AcceptedRate))).scalar_one()
    assert (audit.actor, audit.object) == ("user:usr_ops", "BTC/USD")
    assert '"rate": 6000000' in audit.state_before and '"rate": 3600000' in audit.state_after
    assert "the market fell" in audit.state_after
    assert (now.low, now.high, count) == (3_600_000, 3_600_000, 2)


def first_rates(sessions: async_sessionmaker[AsyncSession] | None,
                *sources: ScriptedSource | FixedRateSource, **kw: Any) -> RateService:
    memory = DbRateMemory(sessions) if sessions is not None else None
    return RateService(list(sources), ttl_seconds=0, clock=FakeClock(), memory=memory,
                       first_min_sources=2, **kw)


@pytest.mark.parametrize("database", [True, False], ids=["database", "process"])
async def test_a_first_rate_needs_two_sources_agreeing(sessions, clock, database):
    """Nothing accepted for USD yet: one exchange's word alone (the others down) is refused,
    nothing recorded, since it would also anchor every bound after it; two agreeing are
    accepted, and from then on one source is measured against that rate as before."""
    mine = sessions if database else None
    alone = first_rates(mine, ScriptedSource("kraken", "60000"),
                        ScriptedSource("coinbase", SourceUnreachable("HTTP 503")))
    with pytest.raises(RateRefused, match=r"kraken says 60000\.00, and no rate for USD was "
                                          r"accepted before .* needs 2 sources agreeing "
                                          r"\(here 1\), or a person's `satvault rates "
                                          r"accept USD`"):
        await alone.rate("USD")
    if database:
        assert await rows(sessions) == []
    two = first_rates(mine, ScriptedSource("kraken", "60000"), ScriptedSource("coinbase",
                                                                              "60100"))
    assert (await two.rate("USD")).minor_per_btc == 6_005_000
    if database:
        later = first_rates(sessions, ScriptedSource("kraken", "60200"),
                            ScriptedSource("coinbase", SourceUnreachable("HTTP 503")))
        assert (await later.rate("USD")).minor_per_btc == 6_020_000
        assert [r.minor_per_btc for r in await rows(sessions)] == [6_005_000, 6_020_000]
        with pytest.raises(RateRefused, match="no rate for EUR was accepted before"):
            await later.rate("EUR")  # another currency has its own first rate
    else:
        assert (await two.rate("USD")).minor_per_btc == 6_005_000


async def test_a_first_rate_from_fixed_prices_alone_or_a_person_is_taken(sessions, clock):
    """Prices the operator typed (the fixed source and nothing else) are a person's word, a
    first rate as good as any; behind a live source they are a fallback, one source's word,
    and refused for a first rate. ``rates accept`` (a person) gives a currency its first rate
    from one source."""
    fixed = first_rates(sessions, FixedRateSource({"USD": "60000"}))
    assert (await fixed.rate("USD")).minor_per_btc == 6_000_000
    fallback = first_rates(sessions, ScriptedSource("kraken", SourceUnreachable("down")),
                           FixedRateSource({"EUR": "55000"}))
    with pytest.raises(RateRefused, match=r"fixed says 55000\.00, and no rate for EUR"):
        await fallback.rate("EUR")
    one = first_rates(sessions, ScriptedSource("kraken", "56000"))
    median, vouched = await one.median("EUR")
    assert vouched == 1
    async with sessions() as s, s.begin():
        await accept_rate(s, rate=median, actor="user:usr_ops", reason="first EUR rate")
    assert (await one.rate("EUR")).minor_per_btc == 5_600_000


def test_a_first_rate_needs_at_least_one_source():
    with pytest.raises(ValueError, match="at least one source"):
        RateService([ScriptedSource("a")], first_min_sources=0)


async def test_a_move_just_past_the_limit_never_reads_as_the_limit(sessions, clock):
    """Found from outside: 72,000.01 after 60,000.00 said "moved 20.00% ... (limit 20.00%)"
    (the move rounded down for the message)."""
    first = process(sessions, "60000")
    assert (await first.rate("USD")).minor_per_btc == 6_000_000
    clock.advance(60)
    with pytest.raises(RateRefused, match=r"moved 20\.01% from 60000\.00"):
        await process(sessions, "72000.01").rate("USD")
