"""A case's SAR through the admin console: drafted from the case page, its content shown
(who, what, when, amounts, transactions, notes), its narrative rewritten, filed with the
authority's reference (refused afterwards, as the service does), and downloaded as JSON and
PDF with the admin API's content. Operators only; every form needs its CSRF token."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.risk.models import RiskCase, RiskSar, SarStatus
from tests.risk.conftest import default_doc
from tests.web.pages.admin_support import (
    SAT,
    ask_withdrawal,
    live_rules,
    merchant_wallet,
    page_csrf,
    sign_in_admin,
)
from tests.web.pages.conftest import page_settings
from tests.web.pages.merchant_helpers import signed_in, token_of

pytestmark = pytest.mark.asyncio


async def held_case(sessions, people, db_url) -> str:
    doc = default_doc()
    doc["rules"].append({"id": "big", "score": 60, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "out"},
        {"field": "amount_msat", "op": "gte", "value": 50_000 * SAT}]}})
    await live_rules(sessions, doc)
    wallet = await merchant_wallet(sessions, people.alice_merchant, sat=500_000)
    await ask_withdrawal(sessions, page_settings(db_url), wallet, 100_000,
                         initiator=people.alice)
    async with sessions() as s:
        return (await s.execute(select(RiskCase.id))).scalar_one()


def _undated(pdf: bytes) -> bytes:
    return re.sub(rb"/CreationDate \([^)]*\)", b"", pdf)


async def test_draft_edit_file_and_download_through_the_case_page(browser, people, sessions,
                                                                 db_url):
    case_id = await held_case(sessions, people, db_url)
    url = f"/admin/cases/{case_id}"
    await sign_in_admin(browser, sessions)
    page = await browser.get(url)
    assert "Draft SAR" in page.text and 'id="sar-facts"' not in page.text
    assert (await browser.get(f"{url}/sar.json")).status_code == 404
    token = await page_csrf(browser, url)
    r = await browser.post(f"{url}/notes", data={"csrf_token": token,
                                                 "text": "merchant called about payout"})
    assert r.status_code == 303

    r = await browser.post(f"{url}/sar", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == f"{url}?done=sar-drafted"
    page = await browser.get(r.headers["location"])
    async with sessions() as s:
        row = (await s.execute(select(RiskSar).where(RiskSar.case_id == case_id))
               ).scalar_one()
    assert row.status == SarStatus.DRAFT and row.created_by == f"user:{people.root}"
    text = page.text
    assert row.id in text and 'id="sar-status">Draft<' in text
    assert "Alice&#39;s Shop" in text and "alice@example.com" in text  # who
    assert "big" in text and "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383" in text  # what
    assert 'id="sar-amount">100,000 sat' in text  # how much
    assert 'id="sar-transactions"' in text and "merchant called about payout" in text
    assert "Draft SAR" not in text and f'href="{url}/sar.pdf"' in text

    # A second draft is the one there is (the service's rule): no second SAR.
    r = await browser.post(f"{url}/sar", data={"csrf_token": token})
    assert r.status_code == 303
    # The narrative: empty is refused (form kept), a new text is saved and kept in history.
    r = await browser.post(f"{url}/sar/narrative", data={"csrf_token": token,
                                                         "narrative": "   "})
    assert r.status_code == 422 and "narrative" in r.text
    r = await browser.post(f"{url}/sar/narrative", data={
        "csrf_token": token, "narrative": "Structuring below the reporting threshold."})
    assert r.status_code == 303 and r.headers["location"] == f"{url}?done=sar-edited"
    page = await browser.get(url)
    assert "Structuring below the reporting threshold.</textarea>" in page.text

    # File it with the authority's reference; then it does not change.
    r = await browser.post(f"{url}/sar/file", data={"csrf_token": token,
                                                    "reference": "FIU-2026-0042"})
    assert r.status_code == 303 and r.headers["location"] == f"{url}?done=sar-filed"
    page = await browser.get(url)
    assert "Filed as FIU-2026-0042" in page.text and "File the SAR" not in page.text
    assert 'id="sar-narrative-text">Structuring below the reporting threshold.' in page.text
    r = await browser.post(f"{url}/sar/narrative", data={"csrf_token": token,
                                                         "narrative": "changed"})
    assert r.status_code == 409 and "does not change" in r.text
    r = await browser.post(f"{url}/sar/file", data={"csrf_token": token,
                                                    "reference": "FIU-OTHER"})
    assert r.status_code == 409 and "filed already" in r.text
    async with sessions() as s:
        row = await s.get(RiskSar, row.id, populate_existing=True)
        assert row.status == SarStatus.FILED and row.filed_reference == "FIU-2026-0042"
        assert row.narrative == "Structuring below the reporting threshold."
        assert row.filed_by == f"user:{people.root}"
        _, admin_key = await acc.create_api_key(s, owner_id=people.root, scopes=["admin"])
        await s.commit()

    # The downloads are the admin API's content.
    api = f"/api/v1/admin/risk/cases/{case_id}/sar"
    auth = {"Authorization": f"Bearer {admin_key}"}
    as_json = await browser.get(f"{url}/sar.json")
    assert as_json.status_code == 200 and "attachment" in as_json.headers["content-disposition"]
    assert as_json.json() == (await browser.get(api, headers=auth)).json()
    assert as_json.json()["filed_reference"] == "FIU-2026-0042"
    as_pdf = await browser.get(f"{url}/sar.pdf")
    assert as_pdf.status_code == 200 and as_pdf.headers["content-type"] == "application/pdf"
    api_pdf = await browser.get(api, params={"format": "pdf"}, headers=auth)
    assert as_pdf.content.startswith(b"%PDF")
    assert _undated(as_pdf.content) == _undated(api_pdf.content)


async def test_operators_only_and_csrf(browser, people, sessions, db_url):
    case_id = await held_case(sessions, people, db_url)
    url = f"/admin/cases/{case_id}"
    # A merchant owner (signed in, not an admin): refused, nothing drafted.
    await signed_in(browser)
    token = await token_of(browser, f"/dashboard/m/{people.alice_merchant}")
    for path in ("/sar", "/sar/narrative", "/sar/file"):
        r = await browser.post(f"{url}{path}", data={"csrf_token": token, "narrative": "x",
                                                    "reference": "x"})
        assert r.status_code == 403, path
    for path in ("", "/sar.json", "/sar.pdf"):
        assert (await browser.get(f"{url}{path}")).status_code == 403, path

    async with browser.__class__(transport=browser._transport,
                                 base_url="http://test") as admin:
        await sign_in_admin(admin, sessions)
        r = await admin.post(f"{url}/sar", data={})
        assert r.status_code == 403
        async with sessions() as s:
            assert (await s.execute(select(RiskSar))).first() is None
        token = await page_csrf(admin, url)
        assert (await admin.post(f"{url}/sar", data={"csrf_token": token})).status_code == 303
        for path, data in (("/sar/narrative", {"narrative": "x"}),
                           ("/sar/file", {"reference": "x"})):
            assert (await admin.post(f"{url}{path}", data=data)).status_code == 403
        async with sessions() as s:
            row = (await s.execute(select(RiskSar))).scalar_one()
            assert row.status == SarStatus.DRAFT and row.narrative != "x"
