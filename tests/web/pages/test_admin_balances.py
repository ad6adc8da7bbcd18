"""``/admin/balances``: the custody figures against the liabilities (the same as /metrics),
the coverage ratio, and the reconciliation run from the page."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit_one
from satvault.reconcile.models import ReconciliationRun
from tests.web.pages.admin_helpers import sign_in_admin, token_of
from tests.web.pages.conftest import sign_in


def metric(text: str, name: str, label: str = "") -> int:
    found = re.search(rf"^{name}{re.escape(label)} (\S+)$", text, re.M)
    assert found, name
    return int(float(found.group(1)))


async def test_only_an_operator_with_the_second_factor_sees_it(browser, people, sessions):
    await sign_in(browser, "alice@example.com")
    assert (await browser.get("/admin/balances")).status_code == 403
    assert (await browser.get("/admin/custody")).status_code == 403
    await sign_in_admin(browser, sessions, "root@example.com", mfa=False)
    assert (await browser.get("/admin/balances")).status_code == 403
    browser.cookies.clear()
    r = await browser.get("/admin/balances")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_the_figures_are_the_metrics_and_the_coverage_is_shown(browser, people, sessions):
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=people.alice_merchant)
    # The books say semi-cold holds 70,000 sat, owed to Alice's shop; no coin backs it.
    await submit_one(sessions, TransferSpec("test:owed", platform.hot_wallet.id,
                                            wallet.ledger_account_id, 70_000_000, "BTC"))
    await sign_in_admin(browser, sessions, "root@example.com")
    page = await browser.get("/admin/balances")
    assert page.status_code == 200, page.text
    html = page.text
    metrics = (await browser.get("/metrics")).text
    liabilities = metric(metrics, "satvault_liabilities_msat")
    assets = metric(metrics, "satvault_assets_msat")
    assert liabilities == 70_000_000 and assets == 0
    assert re.search(r'id="liabilities">70,000 sat<', html)
    assert re.search(r'id="assets">0 sat<', html)
    assert 'id="coverage">0 %<' in html and "Not fully covered" in html
    semicold = html.split('data-tier="semicold"')[1].split("</tr>")[0]
    assert metric(metrics, "satvault_custody_ledger_sat", '{tier="semicold"}') == 70_000
    assert "70,000" in semicold  # the ledger column
    # The chart is accessible: a title, a description naming the figures, and the table.
    assert "<title id=\"chart-title\">" in html and "Customer liabilities: 70,000 sat" in html
    assert "the ledger has 70000 sat" in html  # the custody difference, named


async def test_a_reconciliation_run_from_the_page_is_recorded(browser, people, sessions):
    await sign_in_admin(browser, sessions, "root@example.com")
    token = await token_of(browser, "/admin/balances")
    assert "has not run yet" in (await browser.get("/admin/balances")).text
    # Without the CSRF token: refused, no run.
    r = await browser.post("/admin/balances/reconcile", data={})
    assert r.status_code == 403
    async with sessions() as s:
        assert (await s.execute(select(func.count()).select_from(ReconciliationRun))
                ).scalar_one() == 0
    r = await browser.post("/admin/balances/reconcile", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/balances")
    async with sessions() as s:
        run = (await s.execute(select(ReconciliationRun))).scalar_one()
    page = (await browser.get(r.headers["location"])).text
    assert f"Last run #{run.id}" in page
    # This process has no node connection: what cannot be asked is a difference, listed.
    assert run.differences >= 1 and "chain_node_unreachable" in page
