"""The platform's accounts: created once per asset (and after an upgrade, the ones it lacks),
and the fees account striped so fee-bearing payments do not all wait on one row."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from satvault.ledger.core import AccountKind, TransferSpec
from satvault.ledger.errors import AccountConflict
from satvault.ledger.models import LedgerAccount
from satvault.ledger.platform import (
    _SPEC,
    FEE_STRIPES,
    ensure_platform_accounts,
    fee_stripe_names,
    fees_earned,
    platform_account_name,
)
from satvault.ledger.store import create_account, submit
from tests.factories import account, books
from tests.statements import count_statements


async def test_the_fees_are_striped_and_summed(sessions):
    b = await books(sessions, wallets=3, fund=1_000_000)
    platform = b.platform
    stripes = platform.fee_stripes
    assert len(stripes) == FEE_STRIPES == len({a.id for a in stripes})
    assert stripes[0] == platform.fees  # the account that was always there comes first
    async with sessions() as s:
        names = dict((await s.execute(select(LedgerAccount.id, LedgerAccount.name).where(
            LedgerAccount.id.in_([a.id for a in stripes])))).all())
    assert [names[a.id] for a in stripes] == fee_stripe_names("BTC")
    # the same key always picks the same stripe; many keys use them all
    assert platform.fee_account("ln:in:abc") == platform.fee_account("ln:in:abc")
    picked = {platform.fee_account(f"ln:in:{i}").id for i in range(400)}
    assert picked == {a.id for a in stripes}
    # fees booked by 40 payments, at once, land on many stripes and add up
    payers = [w.id for w in b.wallets]
    answers = await asyncio.gather(*(submit(sessions, [
        TransferSpec(f"pay{i}", payers[i % 3], payers[(i + 1) % 3], 1_000, "BTC", linked=True),
        TransferSpec(f"pay{i}:fee", payers[i % 3], platform.fee_account(f"pay{i}").id, 10 + i,
                     "BTC", code="invoice_fee")]) for i in range(40)))
    assert all(o.ok for a in answers for o in a)
    held = [(await account(sessions, a.id)).balances.credits_posted for a in stripes]
    assert sum(1 for h in held if h) > 5
    async with sessions() as s:
        assert await fees_earned(s, "BTC") == sum(held) == sum(10 + i for i in range(40))


async def test_an_upgraded_platform_gets_the_stripes_it_lacks(sessions):
    """A database made before the stripes has the platform's accounts but one fees account:
    the next start adds the stripes and keeps every account it had."""
    async with sessions() as s, s.begin():
        before = {}
        for role, (kind, dnec, cned) in _SPEC.items():
            before[role] = await create_account(
                s, name=platform_account_name(role, "BTC"), asset="BTC", kind=kind,
                owner_type="platform", debits_must_not_exceed_credits=dnec,
                credits_must_not_exceed_debits=cned)
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
    assert platform.fees.id == before["fees"].id and platform.external.id == before["external"].id
    assert len(platform.fee_stripes) == FEE_STRIPES
    async with sessions() as s, s.begin():
        again = await ensure_platform_accounts(s, "BTC")  # nothing more to create
        count = (await s.execute(select(func.count()).select_from(LedgerAccount))).scalar()
    assert again == platform and count == len(_SPEC) + FEE_STRIPES - 1


async def test_a_fresh_platforms_accounts_are_one_statement(engine, sessions):
    """A fresh database's first wallet made the platform's 24 accounts one by one (a lookup,
    a savepoint and an INSERT each: 96 statements, ~30 ms on SQLite); they are one INSERT
    now. Two processes starting at once (two sessions here) both get the same accounts, and
    nothing is made twice."""
    with count_statements(engine) as n:
        async with sessions() as s, s.begin():
            first = await ensure_platform_accounts(s, "BTC")
    assert n.total <= 3, n

    async def start() -> object:
        async with sessions() as s, s.begin():
            return await ensure_platform_accounts(s, "LTC")
    a, b = await asyncio.gather(start(), start())
    assert a == b and a != first
    async with sessions() as s:
        count = (await s.execute(select(func.count()).select_from(LedgerAccount))).scalar()
    assert count == 2 * (len(_SPEC) + FEE_STRIPES - 1)


async def test_a_platform_account_unlike_its_spec_is_refused_by_name(sessions):
    """An account of a platform name that is not what the platform needs (a hand-made one,
    a guard switched off) is never taken for it: the start fails naming it, and nothing else
    is created in its transaction."""
    async with sessions() as s, s.begin():
        await create_account(s, name=platform_account_name("hot_wallet", "BTC"), asset="BTC",
                             kind=AccountKind.HOT_WALLET, owner_type="platform")
    with pytest.raises(AccountConflict, match="platform:hot_wallet:BTC"):
        async with sessions() as s, s.begin():
            await ensure_platform_accounts(s, "BTC")
    async with sessions() as s:
        count = (await s.execute(select(func.count()).select_from(LedgerAccount))).scalar()
    assert count == 1
