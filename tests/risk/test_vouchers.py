"""LNURL-withdraw vouchers are screened like every withdrawal: a sanctioned payee is refused,
the voucher stays open with its hold, and the decision is stored."""

from __future__ import annotations

from sqlalchemy import select

from satvault.lightning.bolt11check import check_invoice
from satvault.lightning.lnurl_models import LnurlWithdrawVoucher
from satvault.risk.lists import refresh_sanctions
from satvault.risk.models import RiskCase, RiskDecision
from tests.lightning_lnurl.conftest import LnEnv, ln  # noqa: F401
from tests.lightning_lnurl.fakes import make_bolt11
from tests.lightning_lnurl.test_withdraw import FUND, redeem, voucher, withdrawals


async def test_a_voucher_to_a_sanctioned_payee_is_refused(ln: LnEnv):  # noqa: F811
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    pr = make_bolt11(100_000)
    payee = check_invoice(pr, network=ln.settings.network).payee
    async with ln.sessions() as s, s.begin():
        await refresh_sanctions(s, text=f"{payee}\n", actor="user:admin")
    refused = await redeem(ln, v, pr)
    # The decision is the operator's: the anonymous redeemer gets no reason (found from outside).
    assert refused["status"] == "ERROR" and "cannot be redeemed" in refused["reason"], refused
    async with ln.sessions() as s:
        row = await s.get(LnurlWithdrawVoucher, v["id"])
        d = (await s.execute(select(RiskDecision))).scalar_one()
        case = (await s.execute(select(RiskCase))).scalar_one()
    assert row is not None and row.status == "open"  # still redeemable, its hold kept
    assert d.outcome == "reject" and d.sanctioned and d.id not in refused["reason"]
    assert case.decision_id == d.id
    assert await withdrawals(ln) == 0
    assert (await ln.balance("alice"))["held"] > 0

    async with ln.sessions() as s, s.begin():  # delisted: the same voucher pays
        await refresh_sanctions(s, text="bc1qsomeoneelse\n", actor="user:admin")
    assert await redeem(ln, v, make_bolt11(100_000)) == {"status": "OK"}
    assert await withdrawals(ln) == 1
    await ln.check()
