"""The dashboard's money forms (withdrawals, withdraw vouchers, deposits) spend the creation
budget as the API's endpoints do, counted per web session: with Redis one budget across
processes. Refused, a form answers 429 with ``Retry-After`` and nothing is held."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import Merchant
from satvault.config import Settings
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import get_account, submit
from satvault.lightning.lnurl_models import LnurlWithdrawVoucher
from satvault.payouts.models import Withdrawal
from satvault.web.app import create_app
from tests.web.pages.conftest import People
from tests.web.pages.merchant_helpers import fresh, signed_in, step_up, token_of
from tests.web.test_rate_limits import storage  # noqa: F401 (a fixture)

BUDGET = 3
DEST = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"


def settings_for(db_url: str, home: Path, store: tuple[str, str]) -> Settings:
    url, prefix = store
    return Settings(database_url=db_url, home=home, network="regtest",
                    rate_limit_storage=url, rate_limit_key_prefix=prefix,
                    rate_limit_create=f"{BUDGET}/minute")


@pytest.fixture
async def browsers(engine, db_url, tmp_path, storage  # noqa: F811
                   ) -> AsyncIterator[Callable[..., Any]]:
    """``await browsers()``: a browser-like client of a fresh app instance (a process); all
    share this test's rate-limit storage."""
    async with AsyncExitStack() as stack:
        async def make() -> httpx.AsyncClient:
            app = create_app(settings_for(db_url, tmp_path, storage), engine=engine,
                             start_workers=False)
            await stack.enter_async_context(app.router.lifespan_context(app))
            return await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"))

        yield make


async def _fund(sessions: async_sessionmaker[AsyncSession], merchant: str) -> int:
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=merchant)
    (outcome,) = await submit(sessions, [TransferSpec(
        f"fund:{merchant}", platform.external.id, wallet.ledger_account_id, 10**10, "BTC",
        code="deposit")])
    assert outcome.ok, outcome
    return wallet.ledger_account_id


async def _count(sessions: async_sessionmaker[AsyncSession], table: Any) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(table))).scalar_one())


def _limited(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["content-type"].startswith("text/html")  # a page, as the form's errors


async def test_dashboard_money_forms_spend_the_creation_budget(
        browsers, storage, people: People,  # noqa: F811
        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _fund(sessions, people.alice_merchant)
    first = await browsers()
    await signed_in(first)
    await step_up(sessions, people.alice)
    base = f"/dashboard/m/{people.alice_merchant}"
    token = await token_of(first, f"{base}/lightning")
    voucher = {"csrf_token": token, "amount_sat": "1000", "description": "gift"}
    # A second process of the same site, the same browser (its session cookie).
    second = await browsers()
    second.cookies = first.cookies
    for client in (first, second, first):
        r = await client.post(f"{base}/lightning/vouchers", data={**voucher, **fresh()})
        assert r.status_code == 201, r.text  # the page showing its link once
    client = second
    if storage[0] == "memory":  # per process: each has its own three
        for client in (second, second, first):
            r = await client.post(f"{base}/lightning/vouchers", data={**voucher, **fresh()})
            assert r.status_code == 201, r.text
    _limited(await client.post(f"{base}/lightning/vouchers", data={**voucher, **fresh()}))
    held = (await _get_held(sessions, account))
    page = await client.get(f"{base}/withdraw")
    assert page.status_code == 200, page.text
    key = page.text.split('name="idempotency_key" value="', 1)[1].split('"', 1)[0]
    _limited(await client.post(f"{base}/withdraw", data={
        "csrf_token": token, "rail": "onchain", "destination": DEST, "amount_sat": "50000",
        "idempotency_key": key}))
    _limited(await client.post(f"{base}/deposit", data={
        "csrf_token": token, "method": "onchain", "amount_sat": "1000"}))
    assert await _get_held(sessions, account) == held
    assert await _count(sessions, Withdrawal) == 0
    assert await _count(sessions, LnurlWithdrawVoucher) == (3 if storage[0] != "memory" else 6)


async def _get_held(sessions: async_sessionmaker[AsyncSession], account: int) -> int:
    async with sessions() as s:
        return (await get_account(s, account)).balances.debits_pending


async def test_creating_merchants_from_the_dashboard_spends_the_creation_budget(
        browsers, storage, people: People,  # noqa: F811
        sessions: async_sessionmaker[AsyncSession]) -> None:
    """Found from outside: ``POST /dashboard/merchants`` had no budget, where every other
    creating form has one."""
    before = await _count(sessions, Merchant)
    client = await browsers()
    await signed_in(client)
    token = await token_of(client, "/dashboard")
    for i in range(BUDGET):
        r = await client.post("/dashboard/merchants",
                              data={"csrf_token": token, "name": f"Shop {i}"})
        assert r.status_code == 303, r.text
    _limited(await client.post("/dashboard/merchants",
                               data={"csrf_token": token, "name": "One too many"}))
    assert await _count(sessions, Merchant) == before + BUDGET
