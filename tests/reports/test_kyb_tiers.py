"""Known gap closed (noted from outside at stop 32): the compliance report counted users by
KYC tier but left merchants out, though a merchant's own KYB tier governs its wallet. Merchants
are now counted by their tier (the latest approved record's, 0 without one), beside the users,
in the JSON, the CSV and the PDF."""
from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from pypdf import PdfReader

from satvault.accounts import service as acc
from satvault.kyc import service as kyc
from satvault.rates.service import build_rate_service
from satvault.reports.compliance import report_csv, report_pdf
from satvault.reports.service import period_report
from tests.chainenv import Env


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"rate_sources": "fixed"}


def _record(merchant_id: str, tier: int, decision: str = "approve") -> kyc.RecordRequest:
    return kyc.RecordRequest(owner_type="merchant", owner_id=merchant_id, tier=tier,
                             decision=decision, full_name="Example Shop Ltd",
                             documents=["doc://registry"], checks=["company-registry"],
                             reviewer="ops")


async def test_merchants_are_counted_by_their_own_tier(env: Env):
    async with env.sessions() as s, s.begin():
        owner = await acc.create_user(s, email="owner@example.com")
        shop = await acc.create_merchant(s, name="Shop", owner_user_id=owner.id)
        cafe = await acc.create_merchant(s, name="Cafe", owner_user_id=owner.id)
        await acc.create_merchant(s, name="Stall")  # no record: tier 0
        await kyc.create_record(s, _record(shop.id, 2), max_tier=3, screening_threshold=88)
        # The latest approved record counts: the cafe went to 2 and was lowered to 1, and a
        # later rejected request for 3 changes nothing.
        await kyc.create_record(s, _record(cafe.id, 2), max_tier=3, screening_threshold=88)
        await kyc.create_record(s, _record(cafe.id, 1), max_tier=3, screening_threshold=88)
        await kyc.create_record(s, _record(cafe.id, 3, "reject"), max_tier=3,
                                screening_threshold=88)
    today = datetime.now(UTC).date()
    rates = build_rate_service("fixed", dict(env.settings.fixed_rates))
    async with env.sessions() as s:
        report, rate = await period_report(s, today, today, settings=env.settings, rates=rates)
    assert report["kyb_tiers"] == {"0": 1, "1": 1, "2": 1}, report["kyb_tiers"]
    # Users are counted apart: the merchants' records promoted nobody (all still at 0).
    assert set(report["kyc_tiers"]) == {"0"}, report["kyc_tiers"]
    text = report_csv(report)
    assert "kyb_tiers,2,merchants,1" in text and "kyb_tiers,0,merchants,1" in text
    pdf = PdfReader(io.BytesIO(report_pdf(report, rate)))
    body = " ".join(page.extract_text() for page in pdf.pages)
    assert "Merchants by KYB tier" in body
