"""The admin console's accounts: search by every key an operator has, the detail page's
balances, KYC tier and history, and freezing a wallet through the page — with a reason and a
confirmation — which the withdrawal path then refuses, audited with the reason; unfreezing
lets it through again."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from satvault.accounts.models import AuditEvent, Wallet
from satvault.kyc.errors import WalletFrozen
from satvault.payouts.models import WithdrawalStatus
from tests.web.pages.admin_support import (
    ask_withdrawal,
    merchant_wallet,
    page_csrf,
    sign_in_admin,
)
from tests.web.pages.conftest import page_settings

pytestmark = pytest.mark.asyncio


async def test_search_finds_the_account_by_each_key(browser, people, sessions):
    wallet = await merchant_wallet(sessions, people.alice_merchant, sat=50_000)
    await sign_in_admin(browser, sessions)
    for q, link in [("alice@example", f"/admin/accounts/user/{people.alice}"),
                    ("ALICE@EXAMPLE.COM", f"/admin/accounts/user/{people.alice}"),
                    (people.alice, f"/admin/accounts/user/{people.alice}"),
                    ("alice's", f"/admin/accounts/merchant/{people.alice_merchant}"),
                    (people.alice_merchant, f"/admin/accounts/merchant/{people.alice_merchant}"),
                    (wallet.id, f"/admin/accounts/merchant/{people.alice_merchant}")]:
        r = await browser.get("/admin/accounts", params={"q": q})
        assert r.status_code == 200
        assert f'href="{link}"' in r.text, q
        assert "bob@example.com" not in r.text and "Bob&#39;s Bikes" not in r.text
    r = await browser.get("/admin/accounts", params={"q": "nobody-at-all"})
    assert "No account matches." in r.text


async def test_the_detail_page_shows_balances_tier_and_owner(browser, people, sessions):
    await merchant_wallet(sessions, people.alice_merchant, sat=50_000)
    await sign_in_admin(browser, sessions)
    page = await browser.get(f"/admin/accounts/merchant/{people.alice_merchant}")
    assert page.status_code == 200
    assert "Alice&#39;s Shop" in page.text and "alice@example.com" in page.text
    assert "50,000 sat" in page.text
    assert 'id="kyc-tier">0<' in page.text
    assert (await browser.get("/admin/accounts/merchant/mer_nope")).status_code == 404
    assert (await browser.get(f"/admin/accounts/user/{people.alice}")).status_code == 200


async def test_freeze_through_the_page_blocks_withdrawals_and_is_audited(browser, people,
                                                                          sessions, db_url):
    settings = page_settings(db_url)
    wallet = await merchant_wallet(sessions, people.alice_merchant, sat=200_000)
    await sign_in_admin(browser, sessions)
    url = f"/admin/accounts/merchant/{people.alice_merchant}"
    token = await page_csrf(browser, url)

    # Without the confirmation, or without a reason: refused, the form kept, nothing frozen.
    r = await browser.post(f"/admin/wallets/{wallet.id}/freeze",
                           data={"csrf_token": token, "reason": "court order 2026/17"})
    assert r.status_code == 422 and "Tick the box to confirm." in r.text
    assert "court order 2026/17</textarea>" in r.text
    r = await browser.post(f"/admin/wallets/{wallet.id}/freeze",
                           data={"csrf_token": token, "reason": "  ", "confirm": "yes"})
    assert r.status_code == 422 and "a freeze needs a reason" in r.text
    async with sessions() as s:
        assert (await s.get(Wallet, wallet.id)).frozen_at is None

    r = await browser.post(f"/admin/wallets/{wallet.id}/freeze", data={
        "csrf_token": token, "reason": "court order 2026/17", "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == f"{url}?done=frozen"
    page = await browser.get(r.headers["location"])
    assert "The wallet is frozen." in page.text and "court order 2026/17" in page.text
    assert "Unfreeze this wallet" in page.text

    with pytest.raises(WalletFrozen, match="court order 2026/17"):
        await ask_withdrawal(sessions, settings, wallet, 10_000, initiator=people.alice)
    async with sessions() as s:
        row = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "wallet.freeze", AuditEvent.object == wallet.id))).scalar_one()
    assert row.actor == people.root
    assert json.loads(row.state_after) == {"reason": "court order 2026/17"}
    # the account's audit trail on its page shows it
    assert "wallet.freeze" in page.text

    # Freezing again is the service's refusal, shown on the page.
    r = await browser.post(f"/admin/wallets/{wallet.id}/freeze", data={
        "csrf_token": token, "reason": "again", "confirm": "yes"})
    assert r.status_code == 422 and "frozen already" in r.text

    r = await browser.post(f"/admin/wallets/{wallet.id}/unfreeze", data={
        "csrf_token": token, "reason": "order lifted", "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == f"{url}?done=unfrozen"
    wd = await ask_withdrawal(sessions, settings, wallet, 10_000, initiator=people.alice)
    assert wd.status == WithdrawalStatus.PENDING
    async with sessions() as s:
        row = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "wallet.unfreeze"))).scalar_one()
    assert row.actor == people.root and json.loads(row.state_after)["reason"] == "order lifted"


async def test_the_home_page_counts_what_needs_attention(browser, people, sessions):
    await sign_in_admin(browser, sessions)
    page = await browser.get("/admin")
    assert 'id="kyc-count">0<' in page.text and 'id="case-count">0<' in page.text
    assert 'id="approval-count">0<' in page.text
    # no reconciliation has run: the page says so rather than showing an all-clear
    assert 'class="figure warn" id="reconciliation">Not run yet<' in page.text


async def test_search_by_deposit_address_and_invoice_id(browser, people, sessions):
    from datetime import timedelta

    from satvault.db import utcnow
    from satvault.lightning.models import LnInvoice, LnInvoiceStatus
    from satvault.onchain.models import AddressStatus, OnchainAddress, OnchainWallet

    wallet = await merchant_wallet(sessions, people.bob_merchant)
    now = utcnow()
    address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    async with sessions() as s, s.begin():  # rows as the deposit and invoice paths leave them
        s.add(OnchainWallet(id="ow_test", role="deposit", descriptor="wpkh(x)",
                            network="regtest", gap_limit=20, next_receive=1, next_change=0,
                            created_at=now))
        await s.flush()
        s.add(OnchainAddress(wallet_id="ow_test", chain=0, idx=0, address=address,
                             script_pubkey="0014" + "00" * 20, status=AddressStatus.ALLOCATED,
                             owner_type="merchant", owner_id=people.bob_merchant,
                             purpose="deposit", allocated_at=now))
        s.add(LnInvoice(id="lni_test123", wallet_id=wallet.id, purpose="receive",
                        payment_hash="11" * 32, bolt11="lnbcrt1test", amount_msat=1000,
                        description="", status=LnInvoiceStatus.OPEN, expires_at=now
                        + timedelta(hours=1), created_at=now))
    await sign_in_admin(browser, sessions)
    for q, how in ((address, "deposit address"), ("lni_test123", "Lightning invoice")):
        r = await browser.get("/admin/accounts", params={"q": q})
        assert f'href="/admin/accounts/merchant/{people.bob_merchant}"' in r.text, q
        assert how in r.text and "Alice" not in r.text
