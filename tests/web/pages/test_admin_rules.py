"""``/admin/rules``: a risk rule set or a withdrawal policy proposed by one admin is shown
with its diff, cannot be approved (or rejected) by its proposer, and goes live when a second
admin approves it; invalid JSON comes back with the error beside the text, nothing stored."""

from __future__ import annotations

import json

from sqlalchemy import select, update

from satvault.accounts import service as acc
from satvault.auth.sessions import WebSession
from satvault.config import Settings
from satvault.risk import service as risk
from satvault.risk.models import RiskRuleSet, RuleSetStatus
from satvault.withdrawals.policy import service as policy
from satvault.withdrawals.policy.models import PolicyStatus
from tests.web.pages.admin_helpers import second_admin, sign_in_admin, token_of
from tests.web.pages.conftest import sign_in
from tests.web.pages.merchant_helpers import step_up

REGTEST_ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


async def live_rules(sessions) -> tuple[int, dict]:
    async with sessions() as s, s.begin():
        version, _ = await risk.live_rule_set(s)
        row = await s.get(RiskRuleSet, version)
        assert row is not None
        return version, json.loads(row.rules)


async def test_non_admins_are_refused(browser, people, sessions):
    await sign_in(browser, "alice@example.com")
    assert (await browser.get("/admin/rules")).status_code == 403
    await sign_in_admin(browser, sessions, "root@example.com")
    token = await token_of(browser, "/admin/rules")
    browser.cookies.clear()
    await sign_in(browser, "bob@example.com")
    r = await browser.post("/admin/rules/risk", data={"csrf_token": token, "rules": "{}"})
    assert r.status_code == 403


async def test_a_rule_change_needs_a_second_admin(browser, people, sessions):
    ops = await second_admin(sessions)
    before, rules = await live_rules(sessions)
    changed = json.loads(json.dumps(rules))
    changed["thresholds"]["review"] = changed["thresholds"]["review"] + 1

    await sign_in_admin(browser, sessions, "root@example.com")
    page = await browser.get("/admin/rules")
    assert page.status_code == 200 and f"Live version {before}" in page.text
    token = await token_of(browser, "/admin/rules")
    # Without CSRF: refused; invalid: the error beside the text kept, nothing stored.
    r = await browser.post("/admin/rules/risk", data={"rules": json.dumps(changed)})
    assert r.status_code == 403
    r = await browser.post("/admin/rules/risk", data={"csrf_token": token,
                                                      "rules": '{"thresholds": 5'})
    assert r.status_code == 422 and "not JSON" in r.text and 'aria-invalid="true"' in r.text
    assert "{&#34;thresholds&#34;: 5" in r.text or '{"thresholds": 5' in r.text
    async with sessions() as s:
        assert (await s.execute(select(RiskRuleSet).where(
            RiskRuleSet.status == RuleSetStatus.DRAFT))).first() is None

    r = await browser.post("/admin/rules/risk", data={
        "csrf_token": token, "rules": json.dumps(changed), "note": "review one point later"})
    assert r.status_code == 303
    async with sessions() as s:
        draft = (await s.execute(select(RiskRuleSet).where(
            RiskRuleSet.status == RuleSetStatus.DRAFT))).scalar_one()
    page = (await browser.get(r.headers["location"])).text
    section = page.split(f'id="risk-draft-{draft.version}"')[1].split("</article>")[0]
    assert "You proposed this draft" in section and '<span class="add">' in section
    assert '<span class="del">' in section  # the review threshold's line, before and after

    # The proposer's own approval (and rejection) is refused by the service; nothing live.
    for action in ("approve", "reject"):
        r = await browser.post(f"/admin/rules/risk/{draft.version}/{action}",
                               data={"csrf_token": token})
        assert r.status_code == 409 and "other than its author" in r.text
    assert (await live_rules(sessions))[0] == before

    # A second admin approves it: it is the live rule set.
    await sign_in_admin(browser, sessions, "ops@example.com")
    token = await token_of(browser, "/admin/rules")
    page = (await browser.get("/admin/rules")).text
    assert f"Approve draft {draft.version}" in page
    r = await browser.post(f"/admin/rules/risk/{draft.version}/approve",
                           data={"csrf_token": token})
    assert r.status_code == 303
    version, live = await live_rules(sessions)
    assert version == draft.version and live["thresholds"] == changed["thresholds"]
    async with sessions() as s:
        row = await s.get(RiskRuleSet, version)
    assert row is not None and row.approved_by == f"user:{ops}"
    assert f"Live version {version}" in (await browser.get("/admin/rules")).text


async def test_a_rejected_draft_never_goes_live(browser, people, sessions):
    await second_admin(sessions)
    before, rules = await live_rules(sessions)
    async with sessions() as s, s.begin():
        draft = await risk.propose_rule_set(s, rules=rules, actor=f"user:{people.root}")
    await sign_in_admin(browser, sessions, "ops@example.com")
    token = await token_of(browser, "/admin/rules")
    r = await browser.post(f"/admin/rules/risk/{draft.version}/reject",
                           data={"csrf_token": token})
    assert r.status_code == 303
    async with sessions() as s:
        row = await s.get(RiskRuleSet, draft.version)
    assert row is not None and row.status == RuleSetStatus.RETIRED
    assert (await live_rules(sessions))[0] == before


POLICY = {"rules": [{"name": "large", "action": "require_approval", "approvals": 1,
                     "group": "treasury", "min_amount_msat": 100_000_000}]}


async def test_a_withdrawal_policy_change_needs_a_second_admin(browser, people, sessions):
    ops = await second_admin(sessions)
    await sign_in_admin(browser, sessions, "root@example.com")
    token = await token_of(browser, "/admin/rules")
    r = await browser.post("/admin/rules/policy", data={
        "csrf_token": token, "rules": json.dumps({"rules": [{"name": "x", "action": "?"}]})})
    assert r.status_code == 422 and 'id="policy-error"' in r.text
    r = await browser.post("/admin/rules/policy", data={"csrf_token": token,
                                                        "rules": json.dumps(POLICY)})
    assert r.status_code == 303
    async with sessions() as s:
        [proposed] = await policy.policy_versions(s)
    assert proposed.status == PolicyStatus.PROPOSED
    r = await browser.post(f"/admin/rules/policy/{proposed.version}/approve",
                           data={"csrf_token": token})
    assert r.status_code == 403 and "second admin" in r.text
    await sign_in_admin(browser, sessions, "ops@example.com")
    token = await token_of(browser, "/admin/rules")
    r = await browser.post(f"/admin/rules/policy/{proposed.version}/approve",
                           data={"csrf_token": token})
    assert r.status_code == 303
    async with sessions() as s:
        live = await policy.live_policy(s)
        [row] = await policy.policy_versions(s)
    assert live is not None and live[0] == proposed.version
    assert row.approved_by == ops and live[1].rules[0].group == "treasury"


async def test_a_rejected_policy_version_never_applies(browser, people, sessions):
    await second_admin(sessions)
    async with sessions() as s, s.begin():
        row = await policy.propose_policy(s, admin=people.root, raw=POLICY)
    await sign_in_admin(browser, sessions, "root@example.com")
    token = await token_of(browser, "/admin/rules")
    page = (await browser.get("/admin/rules")).text
    assert f'id="policy-proposed-{row.version}"' in page and "You proposed this version" in page
    r = await browser.post(f"/admin/rules/policy/{row.version}/reject",
                           data={"csrf_token": token})
    assert r.status_code == 403  # the proposer does not decide on their own change
    await sign_in_admin(browser, sessions, "ops@example.com")
    token = await token_of(browser, "/admin/rules")
    r = await browser.post(f"/admin/rules/policy/{row.version}/reject",
                           data={"csrf_token": token})
    assert r.status_code == 303
    async with sessions() as s:
        [again] = await policy.policy_versions(s)
        assert await policy.live_policy(s) is None
    assert again.status == PolicyStatus.WITHDRAWN


async def test_an_approver_change_needs_a_second_admin(browser, people, sessions):
    await second_admin(sessions)
    await sign_in_admin(browser, sessions, "root@example.com")
    token = await token_of(browser, "/admin/rules")
    r = await browser.post("/admin/rules/groups", data={
        "csrf_token": token, "group": "treasury", "member": "nobody@example.com"})
    assert r.status_code == 404 and "no user" in r.text
    # Proposing adds nobody yet: the change waits, and its proposer cannot decide it.
    r = await browser.post("/admin/rules/groups", data={
        "csrf_token": token, "group": "treasury", "member": "bob@example.com"})
    assert r.status_code == 303 and "approver_proposed" in r.headers["location"]
    async with sessions() as s:
        [change] = await policy.pending_group_changes(s)
        assert await policy.group_members(s) == []
    page = (await browser.get(r.headers["location"])).text
    section = page.split(f'id="group-change-{change.id}"')[1].split("</article>")[0]
    assert "You proposed this change" in section and "/approve" not in section
    for action in ("approve", "reject"):
        r = await browser.post(f"/admin/rules/groups/changes/{change.id}/{action}",
                               data={"csrf_token": token})
        assert r.status_code == 403 and "second admin" in r.text

    # The second admin sees the buttons; approving applies the change.
    await sign_in_admin(browser, sessions, "ops@example.com")
    token = await token_of(browser, "/admin/rules")
    page = (await browser.get("/admin/rules")).text
    section = page.split(f'id="group-change-{change.id}"')[1].split("</article>")[0]
    assert f"/admin/rules/groups/changes/{change.id}/approve" in section
    r = await browser.post(f"/admin/rules/groups/changes/{change.id}/approve",
                           data={"csrf_token": token})
    assert r.status_code == 303 and "approver_change_approved" in r.headers["location"]
    async with sessions() as s:
        assert await policy.group_members(s) == [("treasury", people.bob)]
    page = (await browser.get("/admin/rules")).text
    assert 'id="groups"' in page and people.bob in page

    # Removing: proposed from the member's row by ops, rejected then approved by root.
    for expected in ("approver_change_rejected", "approver_change_approved"):
        await sign_in_admin(browser, sessions, "ops@example.com")
        token = await token_of(browser, "/admin/rules")
        r = await browser.post("/admin/rules/groups", data={
            "csrf_token": token, "group": "treasury", "member": people.bob,
            "action": "remove"})
        assert r.status_code == 303 and "approver_removal_proposed" in r.headers["location"]
        async with sessions() as s:
            [change] = await policy.pending_group_changes(s)
        await sign_in_admin(browser, sessions, "root@example.com")
        token = await token_of(browser, "/admin/rules")
        verb = "reject" if expected == "approver_change_rejected" else "approve"
        r = await browser.post(f"/admin/rules/groups/changes/{change.id}/{verb}",
                               data={"csrf_token": token})
        assert r.status_code == 303 and expected in r.headers["location"]
    async with sessions() as s:
        assert await policy.group_members(s) == []
        assert await policy.pending_group_changes(s) == []


async def test_an_allow_list_change_needs_a_step_up(browser, people, sessions):
    """Found from outside: the console added and removed payout allow-list destinations
    with a plain admin session, where the API asks for the ``withdrawals:write`` money scope
    and docs/security.md lists a payout destination's change among the step-up actions.
    Without a step-up both forms send the operator to the step-up page, nothing changed.
    (The operator's own wallet: on a customer's, the next test.)"""
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=people.root)
    await sign_in_admin(browser, sessions, "root@example.com")
    token = await token_of(browser, f"/admin/rules?wallet={wallet.id}")
    form = {"csrf_token": token, "wallet_id": wallet.id, "destination": REGTEST_ADDRESS,
            "label": "cold"}
    r = await browser.post("/admin/rules/allowlist", data=form,
                           headers={"referer": "http://test/admin/rules"})
    assert r.status_code == 303 and r.headers["location"].startswith("/account/step-up"), \
        (r.status_code, r.headers.get("location"))
    async with sessions() as s:
        assert await policy.list_allowlist(s, wallet_id=wallet.id) == []
    await step_up(sessions, people.root)
    r = await browser.post("/admin/rules/allowlist", data=form)
    assert r.status_code == 303 and r.headers["location"].endswith("#allowlist"), r.text
    async with sessions() as s:
        [entry] = await policy.list_allowlist(s, wallet_id=wallet.id)
    async with sessions() as s, s.begin():  # the step-up's window has passed
        await s.execute(update(WebSession).values(stepped_up_at=None))
    r = await browser.post(f"/admin/rules/allowlist/{entry.id}/remove",
                           data={"csrf_token": token, "wallet_id": wallet.id})
    assert r.status_code == 303 and r.headers["location"].startswith("/account/step-up")
    async with sessions() as s:
        assert [e.id for e in await policy.list_allowlist(s, wallet_id=wallet.id)] \
            == [entry.id]
    await step_up(sessions, people.root)
    r = await browser.post(f"/admin/rules/allowlist/{entry.id}/remove",
                           data={"csrf_token": token, "wallet_id": wallet.id})
    assert r.status_code == 303 and r.headers["location"].endswith("#allowlist")
    async with sessions() as s:
        assert await policy.list_allowlist(s, wallet_id=wallet.id) == []


async def test_an_admin_adds_no_destination_to_a_customers_allow_list(browser, people,
                                                                     sessions):
    """Found from outside: one admin allow-listed their own node on a customer's wallet and,
    after the cool-down, withdrew from it past a policy of two approvers for unknown
    destinations. The console refuses an entry on a wallet the admin does not hold, nothing
    changed; removing the holder's entry, which only narrows where money may go, works."""
    async with sessions() as s, s.begin():
        wallet = await acc.ensure_wallet(s, owner_type="merchant",
                                         owner_id=people.alice_merchant)
        kept = await policy.add_allowlist_entry(
            s, wallet=wallet, destination=REGTEST_ADDRESS, label="the merchant's",
            actor=people.alice, settings=Settings())
    await sign_in_admin(browser, sessions, "root@example.com")
    await step_up(sessions, people.root)
    token = await token_of(browser, f"/admin/rules?wallet={wallet.id}")
    node = "02" + "ab" * 32
    r = await browser.post("/admin/rules/allowlist", data={
        "csrf_token": token, "wallet_id": wallet.id, "destination": node, "label": "mine"})
    assert r.status_code == 403 and "not this caller" in r.text, r.status_code
    async with sessions() as s:
        assert [e.id for e in await policy.list_allowlist(s, wallet_id=wallet.id)] \
            == [kept.id]
    r = await browser.post(f"/admin/rules/allowlist/{kept.id}/remove",
                           data={"csrf_token": token, "wallet_id": wallet.id})
    assert r.status_code == 303 and r.headers["location"].endswith("#allowlist")
    async with sessions() as s:
        assert await policy.list_allowlist(s, wallet_id=wallet.id) == []
