"""``satvault.kernel.grouped``: units of one key that arrive while another runs are committed
together, each in a savepoint: a unit that fails leaves the others' writes in place and its
own out; one whose check asks to run again is run again alone; a unit alone runs as
``retrying`` runs it. Both databases."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from satvault.kernel.errors import ConcurrentUpdate, InvalidInput
from satvault.kernel.grouped import GroupedUnits


@pytest.fixture
async def scratch(sessions):
    async with sessions() as s, s.begin():
        await s.execute(text("CREATE TABLE grouped_scratch (k varchar PRIMARY KEY)"))
    yield
    async with sessions() as s, s.begin():
        await s.execute(text("DROP TABLE grouped_scratch"))


async def _rows(sessions) -> set[str]:
    async with sessions() as s:
        return set((await s.execute(text("SELECT k FROM grouped_scratch"))).scalars())


async def test_a_group_keeps_each_units_outcome_its_own(sessions, scratch):
    units = GroupedUnits(sessions)
    gate = asyncio.Event()
    tries: dict[str, int] = {}

    def writes(k: str, *, fail: Exception | None = None, again_once: bool = False):
        async def unit(s):
            tries[k] = tries.get(k, 0) + 1
            if k == "first":
                await gate.wait()  # the others arrive while it runs: the next group
            await s.execute(text("INSERT INTO grouped_scratch VALUES (:k)"), {"k": k})
            if fail is not None:
                raise fail
            if again_once and tries[k] == 1:
                raise ConcurrentUpdate("changed meanwhile")
            return k
        return unit

    first = asyncio.create_task(units.run("payer", writes("first")))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(units.run("payer", writes(k, **kw))) for k, kw in (
        ("a", {}), ("refused", {"fail": InvalidInput("no")}), ("b", {}),
        ("again", {"again_once": True}), ("duplicate-of-a", {}))]
    other = await units.run("other payer", writes("elsewhere"))  # another key: not held up
    gate.set()
    assert await first == "first" and other == "elsewhere"
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert outcomes[0] == "a" and outcomes[2] == "b" and outcomes[3] == "again"
    assert isinstance(outcomes[1], InvalidInput)
    assert await _rows(sessions) == {"first", "elsewhere", "a", "b", "again",
                                     "duplicate-of-a"}
    assert tries["again"] == 2  # rolled back in the group, then run again alone
    assert units.groups == 1 and units.grouped_units == 5


async def test_a_database_error_in_a_unit_is_that_units_alone(sessions, scratch):
    units = GroupedUnits(sessions)
    gate = asyncio.Event()

    def insert(k: str, wait: bool = False):
        async def unit(s):
            if wait:
                await gate.wait()
            await s.execute(text("INSERT INTO grouped_scratch VALUES (:k)"), {"k": k})
            return k
        return unit

    first = asyncio.create_task(units.run("p", insert("x", wait=True)))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(units.run("p", insert(k))) for k in ("y", "x", "z")]
    gate.set()
    await first
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert outcomes[0] == "y" and outcomes[2] == "z"
    assert "unique" in str(outcomes[1]).lower() or "UNIQUE" in str(outcomes[1])
    assert await _rows(sessions) == {"x", "y", "z"}


async def test_what_a_failed_unit_noted_on_the_session_goes_back_with_it(sessions, scratch):
    """Found in a review: the ledger notes balances on ``session.info`` for the commit's
    events; a unit rolled back to its savepoint must not leave its notes to be published."""
    units = GroupedUnits(sessions)
    gate = asyncio.Event()
    seen: list[dict] = []

    async def first(s):
        await gate.wait()
        s.info.setdefault("notes", {})["payer"] = 1
        return "first"

    async def fails(s):
        s.info.setdefault("notes", {})["payee-of-a-refused-payment"] = 99
        s.info["stray"] = True
        raise InvalidInput("refused after noting")

    async def last(s):
        seen.append({k: (dict(v) if isinstance(v, dict) else v) for k, v in s.info.items()
                     if k in ("notes", "stray")})
        return "last"

    head = asyncio.create_task(units.run("p", first))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(units.run("p", u)) for u in (first, fails, last)]
    gate.set()
    await head
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert outcomes[0] == "first" and isinstance(outcomes[1], InvalidInput)
    assert seen == [{"notes": {"payer": 1}}]
