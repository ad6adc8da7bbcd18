"""A voucher whose withdrawal definitely fails (the node says failed, and its record of the
payment agrees) opens again, its amount and fee reserve held again, in the transaction that
records the failure: its holder got nothing, so the link pays again. An outcome that is not
known (a timeout, a lost node) keeps it used: the payment may still arrive."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from satvault.audit.service import list_events
from satvault.backends.errors import BackendUnavailable
from satvault.backends.lightning import PaymentResult
from satvault.kyc.service import freeze
from satvault.ledger.models import LedgerTransfer
from satvault.lightning import vouchers
from satvault.lightning.lnurl_models import LnurlWithdrawVoucher
from satvault.lightning.payments import LightningPayer, fee_reserve
from satvault.payouts.models import Withdrawal
from tests.lightning_lnurl.conftest import LnEnv
from tests.lightning_lnurl.fakes import FakeLightning, make_bolt11
from tests.lightning_lnurl.test_withdraw import FUND, link, redeem, voucher, withdrawals

FAILED = "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS"


async def row(ln: LnEnv, vid: str) -> LnurlWithdrawVoucher:
    async with ln.sessions() as s:
        found = await s.get(LnurlWithdrawVoucher, vid)
    assert found is not None
    return found


async def status_of(ln: LnEnv, wid: str) -> str:
    async with ln.sessions() as s:
        wd = await s.get(Withdrawal, wid)
    assert wd is not None
    return wd.status.value


async def test_a_failed_payment_reopens_the_voucher_which_then_pays(ln: LnEnv):
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    opened = await ln.balance("alice")
    reserve = fee_reserve(100_000, ln.settings)
    ln.lightning.fail_with = FAILED
    assert await redeem(ln, v, make_bolt11(100_000)) == {"status": "OK"}
    failed_wd = (await row(ln, v["id"])).withdrawal_id
    assert failed_wd is not None

    report = await LightningPayer(ln.sessions, ln.lightning, ln.settings).step()
    assert report.failed == 1, report
    assert await status_of(ln, failed_wd) == "failed"
    again = await row(ln, v["id"])
    assert (again.status, again.withdrawal_id, again.closed_at) == ("open", None, None)
    assert (again.amount_msat, again.reserve_msat) == (100_000, reserve)
    assert await ln.balance("alice") == opened  # held again, exactly as before
    got = (await ln.client.get(f"/api/v1/lnurl-withdraw/{v['id']}",
                               headers=ln.auth("alice"))).json()
    assert got["status"] == "open" and got["withdrawal_id"] is None
    assert got["failed_withdrawal_ids"] == [failed_wd]
    assert (await ln.client.get(link(v))).json()["tag"] == "withdrawRequest"
    async with ln.sessions() as s:
        [event] = await list_events(s, action="lnurl_withdraw.reopen")
        holds = (await s.execute(select(LedgerTransfer.id).where(
            LedgerTransfer.ref == v["id"], LedgerTransfer.kind == "pending"))).scalars().all()
    assert event["object"] == v["id"] and failed_wd in str(event)
    assert sorted(holds) == sorted([f"lnurlw:{v['id']}:hold",
                                    f"lnurlw:{v['id']}:hold:{failed_wd}"])

    # The same link, another invoice: paid this time.
    ln.lightning.fail_with = None
    pr = make_bolt11(100_000)
    assert await redeem(ln, v, pr) == {"status": "OK"}
    report = await LightningPayer(ln.sessions, ln.lightning, ln.settings).step()
    assert report.succeeded == 1 and ln.lightning.paid[-1] == pr
    done = await row(ln, v["id"])
    assert done.status == "used" and done.withdrawal_id not in (None, failed_wd)
    assert await ln.balance("alice") == {"available": FUND - 100_000, "held": 0,
                                         "posted": FUND - 100_000}
    # A cancelled reopened voucher releases its new hold.
    v2 = await voucher(ln, 5_000)
    ln.lightning.fail_with = FAILED
    assert await redeem(ln, v2, make_bolt11(5_000)) == {"status": "OK"}
    await LightningPayer(ln.sessions, ln.lightning, ln.settings).step()
    r = await ln.client.delete(f"/api/v1/lnurl-withdraw/{v2['id']}", headers=ln.auth("alice"))
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert (await ln.balance("alice"))["held"] == 0
    await ln.check()


async def test_the_payer_crashing_around_the_failure_holds_once(ln: LnEnv, monkeypatch):
    """The failure's transaction breaks after the voucher's new hold was written: nothing of
    it stays (the payment still in flight, the withdrawal's own hold in place); a restarted
    payer asks the node, records the failure and reopens the voucher once. Running the
    reopening again for that withdrawal holds nothing more."""
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    opened = await ln.balance("alice")
    ln.lightning.fail_with = FAILED
    assert await redeem(ln, v, make_bolt11(100_000)) == {"status": "OK"}
    redeemed = await ln.balance("alice")
    wid = (await row(ln, v["id"])).withdrawal_id
    assert wid is not None

    real = vouchers.record
    calls = 0

    async def crash(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the process died here")
        await real(*args, **kwargs)

    monkeypatch.setattr(vouchers, "record", crash)
    report = await LightningPayer(ln.sessions, ln.lightning, ln.settings).step()
    assert report.failed == 0 and report.errors, report
    assert (await row(ln, v["id"])).status == "used"
    assert await ln.balance("alice") == redeemed
    assert await status_of(ln, wid) == "broadcast"

    restarted = LightningPayer(ln.sessions, ln.lightning, ln.settings)
    report = await restarted.step()
    assert report.failed == 1, report
    assert (await row(ln, v["id"])).status == "open"
    assert await ln.balance("alice") == opened
    assert (await restarted.step()).failed == 0
    async with ln.sessions() as s, s.begin():
        wd = await s.get(Withdrawal, wid)
        assert wd is not None
        assert await vouchers.reopen_after_failure(s, wd) is False
    assert await ln.balance("alice") == opened
    assert calls == 2
    await ln.check()


class _TimesOut(FakeLightning):
    async def pay(self, bolt11_text: str, *, amount_msat: int | None, fee_limit_msat: int,
                  timeout_seconds: int) -> PaymentResult:
        raise BackendUnavailable("the node did not answer in time")


class _StillTrying(FakeLightning):
    """The send says failed, the node's own record says the payment is still out."""

    async def track_payment(self, payment_hash: str) -> PaymentResult | None:
        from satvault.backends.lightning import PaymentStatus
        return PaymentResult(payment_hash, PaymentStatus.IN_FLIGHT)


@pytest.mark.parametrize("node", [_TimesOut, _StillTrying], ids=["timeout", "not-confirmed"])
async def test_an_unknown_outcome_keeps_the_voucher_used(ln: LnEnv, node):
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    assert await redeem(ln, v, make_bolt11(100_000)) == {"status": "OK"}
    redeemed = await ln.balance("alice")
    backend = node()
    backend.fail_with = FAILED
    report = await LightningPayer(ln.sessions, backend, ln.settings).step()
    assert report.failed == 0, report
    used = await row(ln, v["id"])
    assert used.status == "used" and used.withdrawal_id is not None
    assert await status_of(ln, used.withdrawal_id) == "broadcast"
    assert await ln.balance("alice") == redeemed  # the payment's hold, nothing else
    assert (await ln.client.get(link(v))).json()["reason"] == "already used"
    await ln.check()


async def test_a_partly_redeemed_voucher_reopens_whole_or_narrowed(ln: LnEnv):
    """Redeemed for less than its amount, the rest of its hold went back to the wallet at
    once. Reopened, it holds its whole amount again if the wallet still has it; if the
    creator spent the rest meanwhile, it holds what the failed payment gave back and pays at
    most that."""
    await ln.fund("alice", 200_000)
    v = await voucher(ln, 100_000, min_msat=10_000)
    opened = await ln.balance("alice")
    ln.lightning.fail_with = FAILED
    assert await redeem(ln, v, make_bolt11(40_000)) == {"status": "OK"}
    await LightningPayer(ln.sessions, ln.lightning, ln.settings).step()
    whole = await row(ln, v["id"])
    assert (whole.status, whole.amount_msat, whole.min_msat) == ("open", 100_000, 10_000)
    assert await ln.balance("alice") == opened

    assert await redeem(ln, v, make_bolt11(40_000)) == {"status": "OK"}
    spend = await ln.balance("alice")
    await voucher(ln, spend["available"] - fee_reserve(1, ln.settings) - 1)  # the rest
    await LightningPayer(ln.sessions, ln.lightning, ln.settings).step()
    narrow = await row(ln, v["id"])
    reserve = fee_reserve(40_000, ln.settings)
    assert (narrow.status, narrow.amount_msat, narrow.reserve_msat, narrow.min_msat) == \
        ("open", 40_000, reserve, 10_000)
    r = (await ln.client.get(link(v))).json()
    assert (r["minWithdrawable"], r["maxWithdrawable"]) == (10_000, 40_000)
    ln.lightning.fail_with = None
    assert (await redeem(ln, v, make_bolt11(50_000)))["status"] == "ERROR"
    assert await redeem(ln, v, make_bolt11(40_000)) == {"status": "OK"}
    assert (await LightningPayer(ln.sessions, ln.lightning, ln.settings).step()).succeeded == 1
    await ln.check()


async def test_a_withdrawal_cancelled_before_it_left_reopens_its_voucher(ln: LnEnv):
    """The sibling of a failed payment: a voucher's withdrawal cancelled while still
    `pending` (by its owner, an approver's rejection, a case returning it: one path) paid
    nobody either, so the voucher opens again rather than staying spent."""
    await ln.fund("alice", FUND)
    v = await voucher(ln, 40_000)
    opened = await ln.balance("alice")
    assert await redeem(ln, v, make_bolt11(40_000)) == {"status": "OK"}
    wid = (await row(ln, v["id"])).withdrawal_id
    assert wid is not None and await status_of(ln, wid) == "pending"
    r = await ln.client.post(f"/api/v1/withdrawals/{wid}/cancel",
                             headers={**ln.auth("alice"), "Idempotency-Key": "cancel-1"})
    assert r.status_code == 200, r.text
    again = await row(ln, v["id"])
    assert (again.status, again.withdrawal_id) == ("open", None)
    assert await ln.balance("alice") == opened
    pr = make_bolt11(40_000)
    assert await redeem(ln, v, pr) == {"status": "OK"}
    assert (await LightningPayer(ln.sessions, ln.lightning, ln.settings).step()).succeeded == 1
    assert ln.lightning.paid[-1] == pr
    await ln.check()


async def test_a_redeemer_is_not_told_the_owners_freeze_reason(ln: LnEnv):
    """Found from outside: the public callback answered every refusal's text, so whoever held
    the link read an admin's freeze reason (and the owner's KYC limits, the risk decision):
    the wallet gets a generic reason, the operator's log the detail."""
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    async with ln.sessions() as s, s.begin():
        await freeze(s, wallet_id=ln.wallets["alice"].id, reason="court order 2026/17",
                     actor="user:admin")
    answer = await redeem(ln, v, make_bolt11(100_000))
    assert answer["status"] == "ERROR", answer
    assert "court order" not in answer["reason"] and "frozen" not in answer["reason"], answer
    assert "cannot be redeemed" in answer["reason"], answer
    assert await withdrawals(ln) == 0


async def test_a_voucher_no_redemption_could_pay_is_refused_at_creation(ln: LnEnv):
    """Found from outside: a voucher over the wallet's KYC per-transaction limit was made (201,
    its amount held) and could never be redeemed; one was made on a frozen wallet too. Both
    are refused as a withdrawal would be, and nothing is held."""
    await ln.fund("alice", 300_000_000)
    url = f"/api/v1/wallets/{ln.wallets['alice'].id}/lnurl-withdraw"
    over = await ln.client.post(url, json={"amount_msat": 100_000_001}, headers=ln.auth("alice"))
    assert over.status_code == 422, over.text
    assert over.json()["type"].endswith("/kyc-limit-exceeded"), over.text
    assert "per transaction" in over.json()["detail"], over.text
    assert (await ln.balance("alice"))["held"] == 0
    async with ln.sessions() as s, s.begin():
        await freeze(s, wallet_id=ln.wallets["alice"].id, reason="court order",
                     actor="user:admin")
    frozen = await ln.client.post(url, json={"amount_msat": 1_000}, headers=ln.auth("alice"))
    assert frozen.status_code == 403, frozen.text
    assert frozen.json()["type"].endswith("/wallet-frozen"), frozen.text
    assert (await ln.balance("alice"))["held"] == 0
    async with ln.sessions() as s:
        assert (await s.execute(select(LnurlWithdrawVoucher))).scalars().all() == []
