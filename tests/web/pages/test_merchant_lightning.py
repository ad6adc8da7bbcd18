"""The Lightning page: claim a Lightning Address (taken or malformed names refused), create a
withdraw voucher only after a step-up (its amount held, as the API's voucher), see its link
and QR code once, cancel it; CSRF; another merchant's vouchers not found."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import get_account, submit
from satvault.lightning.lnurl import decode_lnurl
from satvault.lightning.lnurl_models import LightningAddress, LnurlWithdrawVoucher
from tests.web.pages.conftest import People
from tests.web.pages.merchant_helpers import fresh, signed_in, step_up, token_of


async def _fund(sessions: async_sessionmaker[AsyncSession], merchant: str, msat: int) -> int:
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=merchant)
    (outcome,) = await submit(sessions, [TransferSpec(
        f"fund:{merchant}", platform.external.id, wallet.ledger_account_id, msat, "BTC",
        code="deposit")])
    assert outcome.ok, outcome
    return wallet.ledger_account_id


async def _held(sessions: async_sessionmaker[AsyncSession], account: int) -> int:
    async with sessions() as s:
        return (await get_account(s, account)).balances.debits_pending


async def test_address_and_vouchers(browser: httpx.AsyncClient, people: People,
                                    sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _fund(sessions, people.alice_merchant, 50_000_000)
    await signed_in(browser)
    base = f"/dashboard/m/{people.alice_merchant}/lightning"
    token = await token_of(browser, base)

    r = await browser.post(f"{base}/address", data={"csrf_token": token, "username": "Bad Name"})
    assert r.status_code == 422 and 'value="Bad Name"' in r.text
    r = await browser.post(f"{base}/address", data={"csrf_token": token, "username": "admin"})
    assert r.status_code == 409 and "taken" in r.text
    assert (await browser.post(f"{base}/address", data={"username": "alice"})).status_code == 403
    r = await browser.post(f"{base}/address", data={"csrf_token": token, "username": "Alice"})
    assert r.status_code == 303
    page = await browser.get(base)
    assert "alice@" in page.text and "data:image/svg+xml;base64," in page.text
    async with sessions() as s:
        [row] = (await s.execute(select(LightningAddress))).scalars().all()
        wallet = await s.get(Wallet, row.wallet_id)
        assert wallet is not None and wallet.owner_id == people.alice_merchant

    form = {"csrf_token": token, "amount_sat": "10000", "description": "Raffle prize"}
    r = await browser.post(f"{base}/vouchers", data={**form, **fresh()})
    assert r.status_code == 303 and r.headers["location"].startswith("/account/step-up")
    await step_up(sessions, people.alice)
    r = await browser.post(f"{base}/vouchers", data={**form, **fresh(), "amount_sat": "ten"})
    assert r.status_code == 422 and 'value="ten"' in r.text
    # A comma that is no separator of thousands is refused, never dropped (found from
    # outside: "1,5" read as 15 sats).
    for amount in ("1,5", "0,5", "10,00", "1.000", "0,500", "0 500", "000,001"):
        r = await browser.post(f"{base}/vouchers", data={**form, **fresh(),
                                                         "amount_sat": amount})
        assert r.status_code == 422 and "a whole number of sats" in r.text, amount
    r = await browser.post(f"{base}/vouchers", data={**form, **fresh(), "amount_sat": "10000000"})
    assert r.status_code in (409, 422)  # more than the balance (or the per-payment limit)
    # Past what the model takes: told in the form's own terms (found from outside: the page
    # said "amount_msat: Input should be less than or equal to 2100000000000000000").
    r = await browser.post(f"{base}/vouchers",
                           data={**form, **fresh(), "amount_sat": "9999999999999999"})
    assert r.status_code == 422 and "The amount is out of range." in r.text, r.text
    assert "amount_msat" not in r.text
    assert await _held(sessions, account) == 0
    r = await browser.post(f"{base}/vouchers", data={**form, **fresh(), "amount_sat": "10,000"})
    assert r.status_code == 201, r.text
    async with sessions() as s:
        [voucher] = (await s.execute(select(LnurlWithdrawVoucher))).scalars().all()
    assert voucher.amount_msat == 10_000_000
    assert await _held(sessions, account) == voucher.amount_msat + voucher.reserve_msat
    [lnurl] = re.findall(r"<code[^>]*data-secret>(LNURL1\w+)</code>", r.text)
    assert "data:image/svg+xml;base64," in r.text
    link = urlsplit(decode_lnurl(lnurl)).path
    assert link.startswith("/lnurlw/") and voucher.id not in link
    assert (await browser.get(link)).json()["tag"] == "withdrawRequest"
    # The link is shown only this once: the page shows the voucher, not how to open it.
    page = await browser.get(base)
    assert voucher.id in page.text and "Raffle prize" in page.text and lnurl not in page.text

    cancel = f"{base}/vouchers/{voucher.id}/cancel"
    assert (await browser.post(cancel, data={})).status_code == 403
    assert (await browser.post(cancel, data={"csrf_token": token})).status_code == 303
    assert await _held(sessions, account) == 0
    assert (await browser.post(cancel, data={"csrf_token": token})).status_code == 409


async def test_other_merchants_vouchers(browser: httpx.AsyncClient, people: People,
                                        sessions: async_sessionmaker[AsyncSession]) -> None:
    account = await _fund(sessions, people.bob_merchant, 50_000_000)
    async with sessions() as s, s.begin():
        from satvault.config import Settings
        from satvault.lightning import lnurl_service as svc
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=people.bob_merchant)
        voucher, _ = await svc.open_voucher(s, wallet=wallet, amount_msat=1_000_000,
                                         min_msat=None, description="bob's",
                                         settings=Settings(), actor="test")
    await signed_in(browser)
    await step_up(sessions, people.alice)
    base = f"/dashboard/m/{people.alice_merchant}/lightning"
    token = await token_of(browser, base)
    assert voucher.id not in (await browser.get(base)).text
    assert (await browser.get(f"/dashboard/m/{people.bob_merchant}/lightning")).status_code == 404
    for path in (f"{base}/vouchers/{voucher.id}/cancel",
                 f"/dashboard/m/{people.bob_merchant}/lightning/vouchers/{voucher.id}/cancel",
                 f"/dashboard/m/{people.bob_merchant}/lightning/vouchers",
                 f"/dashboard/m/{people.bob_merchant}/lightning/address"):
        r = await browser.post(path, data={**fresh(), "csrf_token": token, "amount_sat": "1",
                                           "username": "bobby"})
        assert r.status_code == 404, path
    assert await _held(sessions, account) > 0
    async with sessions() as s:
        assert (await s.execute(select(LightningAddress))).scalars().all() == []
        assert len((await s.execute(select(LnurlWithdrawVoucher))).scalars().all()) == 1


async def test_a_voucher_with_an_expiry(browser: httpx.AsyncClient, people: People,
                                        sessions: async_sessionmaker[AsyncSession]) -> None:
    await _fund(sessions, people.alice_merchant, 50_000_000)
    await signed_in(browser)
    base = f"/dashboard/m/{people.alice_merchant}/lightning"
    token = await token_of(browser, base)
    await step_up(sessions, people.alice)
    page = await browser.get(base)
    assert '<select id="expires_in" name="expires_in">' in page.text
    form = {"csrf_token": token, "amount_sat": "1000", "description": "", "expires_in": "bad"}
    r = await browser.post(f"{base}/vouchers", data={**form, **fresh()})
    assert r.status_code == 422
    r = await browser.post(f"{base}/vouchers", data={**form, **fresh(), "expires_in": "86400"})
    assert r.status_code == 201, r.text
    r = await browser.post(f"{base}/vouchers", data={**form, **fresh(), "expires_in": ""})
    assert r.status_code == 201, r.text  # none chosen: the default lifetime, never "never"
    async with sessions() as s:
        rows = (await s.execute(select(LnurlWithdrawVoucher).order_by(
            LnurlWithdrawVoucher.created_at))).scalars().all()
    lifetimes = [(v.expires_at - v.created_at).total_seconds()  # type: ignore[operator]
                 for v in rows]
    assert lifetimes == [86_400, 30 * 86_400]
    assert '<option value="2592000" selected>' in page.text and "Never" not in page.text
