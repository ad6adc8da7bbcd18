"""Every page in a real browser (Debian's Chromium through Playwright): an accessibility scan
with axe-core (from npm, injected by the test) that must find no serious or critical
violation, a check that the page fits a phone's width without sideways scrolling, and
screenshots of every page in English and Chinese in ``test-artifacts/pages/``.

The pages are found from the app's routes (every GET route of ``satvault.web.pages``), so a
new page is scanned without being listed here; a route whose path parameter this test cannot
fill fails the test until it can.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.auth.sessions import WebSession, mark_mfa
from satvault.db import utcnow
from satvault.kyc.requests import request_upgrade
from satvault.onchain.models import ReviewItem
from satvault.risk.models import RiskCase
from satvault.risk.sar import generate_sar
from satvault.web.app import create_app
from tests.chainenv import LnEnv
from tests.events.conftest import add_webhook
from tests.liveserver import chromium, require_browser, sqlite_copy
from tests.liveserver import serve as live
from tests.risk.conftest import default_doc
from tests.web.pages.admin_support import ask_withdrawal, live_rules

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts" / "pages"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
PASSWORD = "correct horse battery"
PHONE_WIDTH = 360
# Not pages: streams, downloads, fragments and form targets that only answer POST-like GETs.
NOT_PAGES = re.compile(r"(/events$|/stream$|/balances$|\.csv$|\.pdf$|\.json$|[./]psbt$|\.svg$"
                       r"|\.png$|^/static/|/download|/export)")


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    require_browser()
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `make install` (npm ci installs axe-core)")


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: the pages' markup is the subject; their behaviour is tested on both."""
    return sqlite_copy(tmp_path, sqlite_template)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"rate_limit_enabled": False}


def page_routes(app: FastAPI) -> list[str]:
    paths = []
    for route in iter_route_contexts(app.routes):
        if ("GET" in (route.methods or ())
                and route.endpoint.__module__.startswith("satvault.web.pages")
                and not NOT_PAGES.search(route.path)):
            paths.append(route.path)
    return sorted(set(paths))


async def seed(env: LnEnv) -> dict[str, str]:
    """A merchant with a store, an API key and an invoice; an operator; their ids by the
    path parameter names the pages use."""
    async with env.sessions() as s, s.begin():
        ada = await acc.create_user(s, email="ada@example.com", password=PASSWORD)
        await acc.create_user(s, email="ops@example.com", password=PASSWORD, is_admin=True)
        merchant = await acc.create_merchant(s, name="Ada's Atelier", owner_user_id=ada.id)
        store = await acc.create_store(s, merchant_id=merchant.id, name="Atelier online")
        key, token = await acc.create_api_key(s, owner_id=store.id,
                                              scopes=["invoices:write", "invoices:read"])
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=merchant.id)
    webhook_id, _ = await add_webhook(env.sessions, store.id, "http://127.0.0.1:9/hook")
    ids = {"webhook_id": webhook_id, "merchant_id": merchant.id, "mid": merchant.id,
           "store_id": store.id, "key_id": key.id, "user_id": ada.id, "wallet_id": wallet.id}
    return ids | {"_store_token": token}


async def money(base: str, env: LnEnv, ids: dict[str, str]) -> dict[str, str]:
    """A deposit address and a withdrawal of the merchant wallet (funded in the ledger)."""
    from satvault.ledger.core import TransferSpec
    from satvault.ledger.platform import ensure_platform_accounts
    from satvault.ledger.store import submit

    async with env.sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        wallet = await acc.get_wallet(s, ids["wallet_id"])
        _, token = await acc.create_api_key(s, owner_id=ids["merchant_id"], scopes=[
            "wallet:read", "wallet:write", "withdrawals:write"])
    await submit(env.sessions, [TransferSpec(
        id="pages:fund", debit_account_id=platform.external.id,
        credit_account_id=wallet.ledger_account_id, amount=100_000_000, asset="BTC",
        code="deposit", ref="pages")])
    key = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post(f"/api/v1/wallets/{wallet.id}/deposits", headers=key)  # on-chain
        assert r.status_code == 201 and r.json()["method"] == "onchain", r.text
        deposit_id = r.json()["id"]
        r = await c.post(f"/api/v1/wallets/{wallet.id}/withdrawals",
                         json={"destination": "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383",
                               "amount_msat": 20_000_000},
                         headers={**key, "Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == 201, r.text
    return {"deposit_id": deposit_id, "withdrawal_id": r.json()["id"]}


async def for_review(env: LnEnv, ids: dict[str, str]) -> dict[str, str]:
    """A risk case (a withdrawal the live rules hold) with a SAR draft, a KYC upgrade
    request and a review item."""
    doc = default_doc()
    doc["rules"].append({"id": "big", "score": 60, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "out"},
        {"field": "amount_msat", "op": "gte", "value": 50_000_000}]}})
    await live_rules(env.sessions, doc)
    async with env.sessions() as s:
        wallet = await acc.get_wallet(s, ids["wallet_id"])
    await ask_withdrawal(env.sessions, env.settings, wallet, 60_000, initiator=ids["user_id"])
    async with env.sessions() as s, s.begin():
        case_id = (await s.execute(select(RiskCase.id))).scalar_one()
        # a SAR draft, so the case page shows its content and narrative form
        await generate_sar(s, case_id=case_id, actor="user:usr_another_admin")  # not its subject
        request = await request_upgrade(
            s, owner_type="merchant", owner_id=ids["merchant_id"], tier=1,
            full_name="Ada Lovelace", documents=["docstore://kyc/ada-passport.pdf"],
            requested_by=ids["user_id"], max_tier=3)
        item = ReviewItem(kind="payout_stuck", subject="pb_pages",
                          details='{"error": "PaidBefore"}', created_at=utcnow())
        s.add(item)
        await s.flush()
    return {"case_id": case_id, "request_id": request.id, "owner_type": "merchant",
            "owner_id": ids["merchant_id"], "item_id": str(item.id)}


async def create_invoice(base: str, ids: dict[str, str]) -> str:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post(f"/api/v1/stores/{ids['store_id']}/invoices",
                         json={"amount": "12.50", "currency": "USD"},
                         headers={"Authorization": f"Bearer {ids['_store_token']}",
                                  "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    invoice_id: str = r.json()["id"]
    return invoice_id


def fill(path: str, ids: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1).split(":")[0]
        assert name in ids, f"{path}: no value for the path parameter {{{name}}} in this test"
        return ids[name]

    return re.sub(r"\{([^}]+)\}", one, path)


async def sign_in(page: Any, base: str, email: str) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()


async def scan(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))")
    found: list[dict[str, Any]] = result
    return found


async def visit_all(browser: Any, base: str, who: str, paths: list[str],
                    ids: dict[str, str], env: LnEnv) -> list[str]:
    problems: list[str] = []
    for lang in ("en", "zh"):
        context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                            bypass_csp=True)  # axe is injected inline
        page = await context.new_page()
        if who.startswith("ada"):  # the signed-out pages first, once
            for path in [p for p in paths if "{" not in p]:
                response = await page.goto(f"{base}{path}?lang={lang}")
                if response is not None and response.ok and "/login?next" not in page.url \
                        and path != "/":
                    problems += await check(page, path, lang, "signed-out", ids)
        await sign_in(page, base, who)
        if who.startswith("ops"):
            async with env.sessions() as s, s.begin():
                newest = (await s.execute(select(WebSession.id)
                                          .order_by(WebSession.created_at.desc()))).scalar()
                await mark_mfa(s, session_id=newest)
        for path in paths:
            url = f"{base}{fill(path, ids)}?lang={lang}"
            response = await page.goto(url)
            assert response is not None
            if ("text/html" not in response.headers.get("content-type", "")
                    or urlsplit(page.url).path != fill(path, ids)):
                continue  # a download, or a signed-out page sending the signed-in on
            if response.status >= 500:
                problems.append(f"{path}: HTTP {response.status}")
                continue
            problems += await check(page, path, lang, who.split("@")[0], ids)
        await context.close()
    return problems


async def check(page: Any, path: str, lang: str, who: str, ids: dict[str, str]) -> list[str]:
    """Scans, photographs and phone-checks the page the browser shows now."""
    problems = [f"{path} [{lang}] {v['impact']} {v['id']}: {v['help']} at {v['nodes']}"
                for v in await scan(page)]
    slug = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root"  # stable names
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{who}-{lang}-{slug}.png"), full_page=True)
    if lang == "en":
        await page.set_viewport_size({"width": PHONE_WIDTH, "height": 780})
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 1:
            problems.append(f"{path}: {overflow}px wider than a {PHONE_WIDTH}px phone")
        await page.set_viewport_size({"width": 1280, "height": 900})
    return problems


async def test_every_page_is_accessible_fits_a_phone_and_is_photographed(lnenv: LnEnv):
    env = lnenv
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ids = await seed(env)
    app = create_app(env.settings, engine=env.sessions.kw["bind"], start_workers=False,
                     runtime=env.runtime)
    paths = page_routes(app)
    assert "/login" in paths and "/dashboard" in paths
    merchant_paths = [p for p in paths if not p.startswith("/admin")]
    admin_paths = [p for p in paths if p.startswith("/admin")]
    async with live(app, lifespan=True) as base, chromium() as browser:
        ids["invoice_id"] = await create_invoice(base, ids)
        ids |= await money(base, env, ids)
        ids |= await for_review(env, ids)
        problems = await visit_all(browser, base, "ada@example.com", merchant_paths, ids, env)
        if admin_paths:
            problems += await visit_all(browser, base, "ops@example.com", admin_paths, ids,
                                        env)
    assert not problems, "\n".join(problems)
