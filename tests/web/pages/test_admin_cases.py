"""Risk cases and withdrawal approvals through the admin console: a held withdrawal needs
two approvers (the same admin approving twice is refused, as the service does) and goes on
after the second; a case is investigated, noted, given an attachment by reference and
closed with a resolution and a money decision that returns the held money."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from satvault.accounts.models import AuditEvent
from satvault.ledger.store import get_account
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.risk.models import CaseStatus, Money, Resolution, RiskCase
from satvault.withdrawals.policy.models import ApprovalStatus
from tests.risk.conftest import default_doc
from tests.web.pages.admin_support import (
    SAT,
    ask_withdrawal,
    live_policy,
    live_rules,
    merchant_wallet,
    page_csrf,
    second_admin,
    sign_in_admin,
)
from tests.web.pages.conftest import page_settings
from tests.web.pages.merchant_helpers import step_up

pytestmark = pytest.mark.asyncio
TWO_OF_TREASURY = [{"name": "large", "action": "require_approval", "approvals": 2,
                    "group": "treasury", "min_amount_msat": 50_000 * SAT}]


async def status_of(sessions, wid: str) -> WithdrawalStatus:
    async with sessions() as s:
        return (await s.get(Withdrawal, wid)).status


async def test_a_held_withdrawal_approved_by_two_admins_goes_on(browser, people, sessions,
                                                                  db_url):
    ops = await second_admin(sessions)
    await live_policy(sessions, admins=(people.root, ops), approvers=[people.root, ops],
                      rules=TWO_OF_TREASURY)
    wallet = await merchant_wallet(sessions, people.alice_merchant, sat=500_000)
    wd = await ask_withdrawal(sessions, page_settings(db_url), wallet, 100_000,
                              initiator=people.alice)
    assert wd.status == WithdrawalStatus.AWAITING_APPROVAL

    await sign_in_admin(browser, sessions)
    page = await browser.get("/admin/approvals")
    assert f"Approve withdrawal {wd.id}" in page.text and "0 of 2" in page.text
    assert 'id="approval-count">1<' in (await browser.get("/admin")).text
    token = await page_csrf(browser, "/admin/approvals")
    # An approval releases money: found from outside, a plain admin session approved. Without
    # a step-up the form sends the operator to the step-up page, nothing changed.
    r = await browser.post(f"/admin/approvals/{wd.id}/approve", data={"csrf_token": token},
                           headers={"referer": "http://test/admin/approvals"})
    assert r.status_code == 303 and r.headers["location"].startswith("/account/step-up"), \
        (r.status_code, r.headers.get("location"))
    assert "0 of 2" in (await browser.get("/admin/approvals")).text
    await step_up(sessions, people.root)
    r = await browser.post(f"/admin/approvals/{wd.id}/approve", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/admin/approvals?done=approved"
    page = await browser.get(r.headers["location"])
    assert "1 of 2" in page.text and "root@example.com" in page.text
    # The same admin again: the service refuses, the page says why, nothing moves.
    r = await browser.post(f"/admin/approvals/{wd.id}/approve", data={"csrf_token": token})
    assert r.status_code == 409 and "already" in r.text
    assert await status_of(sessions, wd.id) == WithdrawalStatus.AWAITING_APPROVAL

    async with httpx.AsyncClient(transport=browser._transport, base_url="http://test") as other:
        await sign_in_admin(other, sessions, "ops@example.com")
        await step_up(sessions, ops)
        token2 = await page_csrf(other, "/admin/approvals")
        r = await other.post(f"/admin/approvals/{wd.id}/approve", data={"csrf_token": token2})
        assert r.status_code == 303 and r.headers["location"] == "/admin/approvals?done=released"
    assert await status_of(sessions, wd.id) == WithdrawalStatus.PENDING  # to the payout job
    async with sessions() as s:
        actions = (await s.execute(select(AuditEvent.actor).where(
            AuditEvent.object == f"withdrawal:{wd.id}",
            AuditEvent.action == "withdrawal.approved"
        ))).scalars().all()
    assert sorted(actions) == sorted([people.root, ops])
    assert "No withdrawal is waiting for approval." in (await browser.get(
        "/admin/approvals")).text


async def test_a_held_withdrawal_rejected_through_the_page(browser, people, sessions, db_url):
    ops = await second_admin(sessions)
    await live_policy(sessions, admins=(people.root, ops), approvers=[people.root, ops],
                      rules=TWO_OF_TREASURY)
    wallet = await merchant_wallet(sessions, people.alice_merchant, sat=500_000)
    wd = await ask_withdrawal(sessions, page_settings(db_url), wallet, 100_000,
                              initiator=people.alice)
    await sign_in_admin(browser, sessions)
    token = await page_csrf(browser, "/admin/approvals")
    r = await browser.post(f"/admin/approvals/{wd.id}/reject",
                           data={"csrf_token": token, "reason": "unknown destination"})
    assert r.status_code == 303
    assert await status_of(sessions, wd.id) == WithdrawalStatus.CANCELLED
    async with sessions() as s:
        from satvault.withdrawals.policy.models import ApprovalRequest
        assert (await s.get(ApprovalRequest, wd.id)).status == ApprovalStatus.REJECTED


async def test_closing_a_case_with_a_money_decision(browser, people, sessions, db_url):
    doc = default_doc()
    doc["rules"].append({"id": "big", "score": 60, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "out"},
        {"field": "amount_msat", "op": "gte", "value": 50_000 * SAT}]}})
    await live_rules(sessions, doc)
    wallet = await merchant_wallet(sessions, people.alice_merchant, sat=500_000)
    wd = await ask_withdrawal(sessions, page_settings(db_url), wallet, 100_000,
                              initiator=people.alice)
    assert wd.status == WithdrawalStatus.REVIEW
    async with sessions() as s:
        case = (await s.execute(select(RiskCase))).scalar_one()
        held = (await get_account(s, wallet.ledger_account_id)).balances.debits_pending
    assert held >= 100_000 * SAT

    await sign_in_admin(browser, sessions)
    listing = await browser.get("/admin/cases")
    assert f'href="/admin/cases/{case.id}"' in listing.text
    assert f'href="/admin/cases/{case.id}"' in (await browser.get(
        "/admin/cases", params={"status": "pending", "wallet_id": wallet.id})).text
    assert f'href="/admin/cases/{case.id}"' not in (await browser.get(
        "/admin/cases", params={"status": "closed"})).text
    url = f"/admin/cases/{case.id}"
    token = await page_csrf(browser, url)

    # A close decides the case's money: without a step-up the form sends the operator to
    # the step-up page first, nothing decided (found from outside, as approvals).
    r = await browser.post(f"{url}/close", data={"csrf_token": token,
                                                 "resolution": "false_positive",
                                                 "money": "release", "note": "fine"},
                           headers={"referer": f"http://test{url}"})
    assert r.status_code == 303 and r.headers["location"].startswith("/account/step-up")
    await step_up(sessions, people.root)
    # Closing a pending case: the service refuses (it is closed once investigated).
    r = await browser.post(f"{url}/close", data={"csrf_token": token,
                                                 "resolution": "confirmed_risk",
                                                 "money": "return", "note": "too early"})
    assert r.status_code == 409 and "being investigated" in r.text
    r = await browser.post(f"{url}/investigate", data={"csrf_token": token,
                                                       "expected_version": case.version})
    assert r.status_code == 303
    r = await browser.post(f"{url}/notes", data={"csrf_token": token,
                                                 "text": "called the merchant"})
    assert r.status_code == 303
    r = await browser.post(f"{url}/attachments", data={
        "csrf_token": token, "uri": "docstore://cases/1/call.txt", "sha256": "ab" * 32,
        "description": "call notes"})
    assert r.status_code == 303
    r = await browser.post(f"{url}/attachments", data={
        "csrf_token": token, "uri": "docstore://x", "sha256": "nothex"})
    assert r.status_code == 422 and "SHA-256" in r.text
    # A stale version (the page was read before the note) is refused: read it again.
    r = await browser.post(f"{url}/close", data={"csrf_token": token,
                                                 "resolution": "confirmed_risk",
                                                 "money": "return", "expected_version": 1})
    assert r.status_code == 409 and "changed meanwhile" in r.text
    page = await browser.get(url)
    assert "called the merchant" in page.text and "docstore://cases/1/call.txt" in page.text
    async with sessions() as s:
        version = (await s.get(RiskCase, case.id)).version
    r = await browser.post(f"{url}/close", data={
        "csrf_token": token, "resolution": "confirmed_risk", "money": "return",
        "note": "structuring", "expected_version": version})
    assert r.status_code == 303 and r.headers["location"] == f"{url}?done=closed"
    async with sessions() as s:
        closed = await s.get(RiskCase, case.id)
        assert closed.status == CaseStatus.CLOSED
        assert (closed.resolution, closed.money) == (Resolution.CONFIRMED_RISK, Money.RETURN)
        assert closed.closed_by == f"user:{people.root}"
        assert (await get_account(s, wallet.ledger_account_id)).balances.debits_pending == 0
    assert await status_of(sessions, wd.id) in (WithdrawalStatus.CANCELLED,
                                                WithdrawalStatus.FAILED)
    page = await browser.get(url)
    assert 'id="case-status">closed' in page.text and "Close the case" not in page.text
