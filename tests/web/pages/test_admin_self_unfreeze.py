"""An operator does not lift a freeze on their own money, as nobody reviews themselves (KYC)
and no admin decides a case about their own money (found from outside, stop 32: a wallet
another admin froze, held by the merchant the signed-in admin owns, was unfrozen by that
admin from the console). Another admin can."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.kyc import service as kyc
from tests.web.pages.admin_helpers import second_admin, sign_in_admin, token_of
from tests.web.pages.conftest import People


async def test_an_admin_cannot_unfreeze_their_own_merchants_wallet(
        browser: httpx.AsyncClient, people: People,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    ops = await second_admin(sessions)
    async with sessions() as s, s.begin():
        mine = await acc.create_merchant(s, name="Root's side shop", owner_user_id=people.root)
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=mine.id)
        await kyc.freeze(s, wallet_id=wallet.id, reason="investigation 7", actor=ops)
    await sign_in_admin(browser, sessions, "root@example.com")
    url = f"/admin/accounts/merchant/{mine.id}"
    token = await token_of(browser, url)
    r = await browser.post(f"/admin/wallets/{wallet.id}/unfreeze", data={
        "csrf_token": token, "reason": "nothing to see", "confirm": "yes"})
    async with sessions() as s:
        w = await s.get(Wallet, wallet.id)
        still_frozen = w is not None and w.frozen_at is not None
    assert r.status_code == 403 and still_frozen, r.status_code
    async with sessions() as s, s.begin():
        await kyc.unfreeze(s, wallet_id=wallet.id, reason="cleared", actor=ops)
