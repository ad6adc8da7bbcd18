"""Working the review queue through the admin API: a case is investigated, assigned, noted
and closed; its decision is what moves the held money — released on-chain (the payout job
then pays it), over Lightning (the payer then pays it) and internally (settled at once), or
returned (the hold voided, the money available again); a refused payment's case closes with
no money; a retried decision moves nothing; a SAR is drafted, edited, filed and exported;
the compliance report counts it all."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.audit.models import AuditEvent
from satvault.events.models import OutboxEvent
from satvault.lightning.invoices import create_invoice
from satvault.lightning.models import LnPayment, LnPaymentStatus
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.rates.service import build_rate_service
from satvault.reports.compliance import report_csv, report_pdf
from satvault.reports.service import period_report
from satvault.risk.lists import refresh_sanctions
from satvault.risk.models import RiskCase, RiskDecision
from satvault.risk.sar import sar_pdf
from tests.chainenv import LnEnv, api_client
from tests.payouts.test_payouts import fund as chain_fund
from tests.risk.conftest import default_doc
from tests.risk.test_withdrawals import DEST, make_live

SAT = 1000
BIG = 50_000 * SAT
DIGEST = "ab" * 32


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"rate_limit_create": "10000/second", "withdrawal_daily_limit_msat": 10**15,
            "rate_sources": "fixed"}


async def admins(env: LnEnv) -> tuple[dict[str, str], dict[str, str], dict[str, str], str]:
    """The customer's key, two admins' keys, and the second admin's id."""
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
        a = await acc.create_user(s, email="ann@example.com", is_admin=True)
        b = await acc.create_user(s, email="bob@example.com", is_admin=True)
        _, ta = await acc.create_api_key(s, owner_id=a.id, scopes=["admin"])
        _, tb = await acc.create_api_key(s, owner_id=b.id, scopes=["admin"])
    return ({"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {ta}"},
            {"Authorization": f"Bearer {tb}"}, b.id)


async def case_of(env: LnEnv, withdrawal_id: str) -> str:
    async with env.sessions() as s:
        return (await s.execute(select(RiskCase.id).join(
            RiskDecision, RiskDecision.id == RiskCase.decision_id).where(
            RiskDecision.subject_id == withdrawal_id))).scalar_one()


async def test_case_decisions_release_or_return_the_held_money(lnenv: LnEnv):
    env = lnenv
    auth, ann, bob, bob_id = await admins(env)
    doc = default_doc()
    doc["rules"].append({"id": "big", "score": 60, "when": {"all": [  # money out only
        {"field": "direction", "op": "eq", "value": "out"},
        {"field": "amount_msat", "op": "gte", "value": BIG}]}})
    await make_live(env, doc)
    await chain_fund(env, 1_000_000)
    carol = await env.wallet_for("carol@example.com")
    async with env.sessions() as s, s.begin():
        own = await create_invoice(s, backend=env.runtime.lightning, wallet=carol,
                                   amount_msat=55_000 * SAT)
    outside = env.network.create_invoice("customer2", 60_000 * SAT).bolt11
    url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
    base = "/api/v1/admin/risk/cases"
    async with api_client(env) as c:
        held = {}
        for key, body in (("chain", {"destination": DEST, "amount_msat": 70_000 * SAT}),
                          ("back", {"destination": DEST, "amount_msat": 80_000 * SAT}),
                          ("ln", {"destination": outside}),
                          ("own", {"destination": own.bolt11})):
            r = await c.post(url, headers={**auth, "Idempotency-Key": key}, json=body)
            assert r.status_code == 201 and r.json()["status"] == "review", r.text
            held[key] = r.json()["id"]
        before_return = await env.balances()
        cases = {k: await case_of(env, w) for k, w in held.items()}

        listed = (await c.get(base, params={"status": "pending"}, headers=ann)).json()
        assert {x["id"] for x in listed} == set(cases.values())
        assert (await c.get(base, headers=auth)).status_code == 403  # admins only
        # Not yet investigated: it cannot be closed.
        r = await c.post(f"{base}/{cases['chain']}/close", headers=ann,
                         json={"resolution": "false_positive"})
        assert r.status_code == 409 and r.json()["type"].endswith("/case-refused"), r.text
        for case in cases.values():
            r = await c.post(f"{base}/{case}/investigate", headers=ann)  # the body optional
            assert r.json()["status"] == "investigating", r.text
        again = await c.post(f"{base}/{cases['chain']}/investigate", headers=ann, json={})
        assert again.status_code == 409 and "only a pending case" in again.json()["detail"]
        r = await c.post(f"{base}/{cases['chain']}/assign", headers=ann,
                         json={"assignee": bob_id, "expected_version": 1})
        assert r.status_code == 409 and r.json()["type"].endswith("/concurrent-update")
        r = await c.post(f"{base}/{cases['chain']}/assign", headers=ann,
                         json={"assignee": bob_id})
        assert r.json()["assignee"] == bob_id
        assert (await c.post(f"{base}/{cases['chain']}/assign", headers=ann,
                             json={"assignee": held["chain"]})).status_code == 422
        assert (await c.get(base, params={"assignee": bob_id}, headers=ann)).json()[0][
            "id"] == cases["chain"]
        await c.post(f"{base}/{cases['chain']}/notes", headers=bob,
                     json={"text": "customer confirmed the payee by phone"})
        r = await c.post(f"{base}/{cases['chain']}/attachments", headers=bob,
                         json={"uri": "s3://evidence/call.mp3", "sha256": DIGEST,
                               "description": "the call"})
        assert r.status_code == 201, r.text
        assert (await c.post(f"{base}/{cases['chain']}/attachments", headers=bob, json={
            "uri": "s3://x", "sha256": "nothex"})).status_code == 422

        # Released: each goes on as an approved one would.
        decided = {}
        for key in ("chain", "ln", "own"):
            r = await c.post(f"{base}/{cases[key]}/close", headers=bob,
                             json={"resolution": "false_positive", "note": "cleared"})
            assert r.status_code == 200, r.text
            decided[key] = r.json()
            assert decided[key]["acted"] and decided[key]["money"] == "release"
        assert decided["chain"]["effect"]["status"] == "pending"
        assert decided["ln"]["effect"]["status"] == "pending"
        assert decided["own"]["effect"]["status"] == "confirmed"
        # Returned: the hold voided, the money the customer's again.
        r = await c.post(f"{base}/{cases['back']}/close", headers=bob,
                         json={"resolution": "confirmed_risk"})
        assert r.json()["money"] == "return" and r.json()["effect"]["status"] == "cancelled"
        # A retried decision answers and moves nothing; another one is refused.
        retry = await c.post(f"{base}/{cases['back']}/close", headers=bob,
                             json={"resolution": "confirmed_risk", "money": "return"})
        assert retry.status_code == 200 and retry.json()["acted"] is False
        other = await c.post(f"{base}/{cases['back']}/close", headers=bob,
                             json={"resolution": "false_positive"})
        assert other.status_code == 409 and "closed already" in other.json()["detail"]
        assert (await c.post(f"{base}/{cases['back']}/notes", headers=bob,
                             json={"text": "late"})).status_code == 409
        shown = (await c.get(f"{base}/{cases['chain']}", headers=ann)).json()
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds == ["assignment", "status", "assignment", "note", "attachment", "note",
                     "decision", "status"], kinds
    assert shown["events"][4]["uri"] == "s3://evidence/call.mp3"
    assert shown["decision"]["subject_id"] == held["chain"] and shown["closed_by"]
    # The merchant is told: a released withdrawal is approved (known gap until stop 34:
    # nothing followed its `created` in `review` until it left).
    async with env.sessions() as s:
        told = {k: [(t, json.loads(p)["status"]) for t, p in (await s.execute(
            select(OutboxEvent.type, OutboxEvent.payload).where(
                OutboxEvent.subject_type == "withdrawal", OutboxEvent.subject_id == w)
            .order_by(OutboxEvent.id))).all()] for k, w in held.items()}
    review = ("withdrawal.created", "review")
    assert told == {"chain": [review, ("withdrawal.approved", "pending")],
                    "ln": [review, ("withdrawal.approved", "pending")],
                    "own": [review, ("withdrawal.confirmed", "confirmed")],
                    "back": [review, ("withdrawal.cancelled", "cancelled")]}, told

    await env.runtime.payouts.step()
    await env.runtime.payer.step()
    async with env.sessions() as s:
        w = {x.id: x for x in (await s.execute(select(Withdrawal))).scalars()}
        assert w[held["chain"]].status == WithdrawalStatus.BROADCAST and w[held["chain"]].batch_id
        assert w[held["ln"]].status == WithdrawalStatus.CONFIRMED
        assert w[held["own"]].status == WithdrawalStatus.CONFIRMED
        assert w[held["back"]].status == WithdrawalStatus.CANCELLED
        [p] = (await s.execute(select(LnPayment))).scalars().all()
        assert p.withdrawal_id == held["ln"] and p.status == LnPaymentStatus.SUCCEEDED
        audited = (await s.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action.like("risk.case.%")))).scalar_one()
    assert audited >= 20
    assert (await env.balances(carol))["available"] == 55_000 * SAT
    after = await env.balances()
    back = w[held["back"]]
    # Only the on-chain payment still in flight is held; the returned one (with its fee
    # reserve) is available again, and so is what the Lightning fee did not use.
    assert after["held"] == 70_000 * SAT + w[held["chain"]].fee_reserve_msat
    assert after["available"] == before_return["available"] + back.amount_msat \
        + back.fee_reserve_msat + w[held["ln"]].fee_reserve_msat - int(p.fee_msat or 0)
    await env.check()


async def test_a_refused_payment_case_a_sar_and_the_compliance_report(lnenv: LnEnv):
    env = lnenv
    auth, ann, _, _ = await admins(env)
    await chain_fund(env, 500_000)
    async with env.sessions() as s, s.begin():
        await refresh_sanctions(s, actor="user:admin", text=DEST)
    base = "/api/v1/admin/risk/cases"
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**auth, "Idempotency-Key": "x"},
                         json={"destination": DEST, "amount_msat": 20_000 * SAT})
        assert r.status_code == 403
        [case] = (await c.get(base, headers=ann)).json()
        assert case["decision"]["outcome"] == "reject" and case["decision"]["sanctioned"]
        cid = case["id"]
        await c.post(f"{base}/{cid}/investigate", headers=ann, json={})
        r = await c.post(f"{base}/{cid}/close", headers=ann,
                         json={"resolution": "confirmed_risk", "money": "release"})
        assert r.status_code == 409 and "no money is held" in r.json()["detail"]
        r = await c.post(f"{base}/{cid}/close", headers=ann,
                         json={"resolution": "confirmed_risk", "note": "sanctioned payee"})
        assert r.json()["money"] == "none" and r.json()["effect"] == {}

        assert (await c.get(f"{base}/{cid}/sar", headers=ann)).status_code == 404
        drafted = await c.post(f"{base}/{cid}/sar", headers=ann)
        assert drafted.status_code == 201, drafted.text
        sar = drafted.json()
        assert sar["status"] == "draft" and sar["who"]["user"]["email"] == "alice@example.com"
        assert sar["what"]["rules_matched"][0]["id"] == "sanctioned_address"
        assert sar["amount"]["sat"] == 20_000 and sar["amount"]["fiat"]["currency"] == "USD"
        assert sar["amount"]["fiat"]["minor"] == 1_200  # 20,000 sat at 60,000 USD/BTC
        assert len(sar["transactions"]["in"]) == 1  # the deposit
        assert "refused by the risk rules" in sar["narrative"]
        assert sar["case_notes"][0]["text"] == "sanctioned payee"
        same = await c.post(f"{base}/{cid}/sar", headers=ann)
        assert same.json()["id"] == sar["id"]
        edited = await c.put(f"{base}/{cid}/sar/narrative", headers=ann,
                             json={"narrative": "The customer tried to pay a listed address."})
        assert edited.json()["narrative"].startswith("The customer tried")
        filed = await c.post(f"{base}/{cid}/sar/file", headers=ann, json={"reference": "FIU-7"})
        assert filed.json()["status"] == "filed" and filed.json()["filed_reference"] == "FIU-7"
        assert (await c.post(f"{base}/{cid}/sar/file", headers=ann,
                             json={"reference": "FIU-7"})).status_code == 200
        assert (await c.post(f"{base}/{cid}/sar/file", headers=ann,
                             json={"reference": "FIU-8"})).status_code == 409
        assert (await c.put(f"{base}/{cid}/sar/narrative", headers=ann,
                            json={"narrative": "again"})).status_code == 409
        pdf = await c.get(f"{base}/{cid}/sar", params={"format": "pdf"}, headers=ann)
        assert pdf.headers["content-type"] == "application/pdf"
        text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
        assert "FIU-7" in text and "listed address" in text and "sanctioned_address" in text
        # A filed SAR is one document: each download is the same bytes, dated when it was
        # last changed (not when it was rendered), however far apart the downloads are.
        stored = (await c.get(f"{base}/{cid}/sar", headers=ann)).json()
        meta = PdfReader(io.BytesIO(pdf.content)).metadata
        assert meta.creation_date == datetime.fromisoformat(stored["updated_at"]).replace(
            microsecond=0)
        later = sar_pdf({**stored, "updated_at": "2026-01-02T03:04:05.678+00:00"})
        assert PdfReader(io.BytesIO(later)).metadata.creation_date == datetime(
            2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert sar_pdf(stored) == (await c.get(f"{base}/{cid}/sar", params={"format": "pdf"},
                                               headers=ann)).content == pdf.content
        events = (await c.get(f"{base}/{cid}", headers=ann)).json()["events"]
        assert [e["kind"] for e in events][-3:] == ["sar", "sar", "sar"]

    today = datetime.now(UTC).date()
    rates = build_rate_service("fixed", dict(env.settings.fixed_rates))
    async with env.sessions() as s:
        report, rate = await period_report(s, today, today, settings=env.settings, rates=rates)
    risk = report["risk"]
    assert risk["alerts"] == {"review": 0, "reject": 1}
    assert risk["cases"] == {"opened": 1, "closed_confirmed_risk": 1,
                             "closed_false_positive": 0}
    assert risk["sars"] == {"drafted": 1, "filed": 1}
    assert risk["blocked"]["rejected_msat"] == 20_000 * SAT
    assert risk["blocked"]["rejected_minor"] == 1_200
    assert "risk,sars,filed,1" in report_csv(report)
    body = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(
        report_pdf(report, rate))).pages)
    assert "SARs filed" in body and "refused (reject decisions)" in body
    # The report's PDF is dated when the report was generated, so the same report is the
    # same bytes.
    report["generated_at"] = "2026-01-02T03:04:05+00:00"
    dated = report_pdf(report, rate)
    assert PdfReader(io.BytesIO(dated)).metadata.creation_date == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert report_pdf(report, rate) == dated
