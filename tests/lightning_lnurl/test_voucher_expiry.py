"""A withdraw voucher may be given an expiry at creation: past it the link refuses with its
own reason, and the hold-expiry worker expires the voucher and releases its hold. Both the
redemption's claim and the expiry are conditional updates of an open voucher, so a
redemption racing the expiry either pays (and nothing is released) or is refused."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from satvault.audit.service import list_events
from satvault.backends.lightning import PaymentResult
from satvault.db import utcnow
from satvault.lightning.lnurl_models import LnurlWithdrawVoucher
from satvault.lightning.lnurl_service import default_voucher_expiry
from satvault.lightning.payments import LightningPayer, fee_reserve
from satvault.workers import hold_expiry_worker
from tests.lightning_lnurl.conftest import LnEnv
from tests.lightning_lnurl.fakes import FakeLightning, make_bolt11
from tests.lightning_lnurl.test_withdraw import FUND, link, redeem, voucher, withdrawals

EXPIRED = {"status": "ERROR", "reason": "this withdraw link has expired"}


class _FailsOne(FakeLightning):
    def __init__(self, *, fail: str) -> None:
        super().__init__()
        self.fail = fail

    async def pay(self, bolt11_text: str, *, amount_msat: int | None, fee_limit_msat: int,
                  timeout_seconds: int) -> PaymentResult:
        self.fail_with = "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS" \
            if bolt11_text == self.fail else None
        return await super().pay(bolt11_text, amount_msat=amount_msat,
                                 fee_limit_msat=fee_limit_msat, timeout_seconds=timeout_seconds)


async def sweep(ln: LnEnv) -> None:
    await hold_expiry_worker(ln.sessions, 5.0)._tick()


async def status(ln: LnEnv, vid: str) -> str:
    async with ln.sessions() as s:
        row = await s.get(LnurlWithdrawVoucher, vid)
    assert row is not None
    return row.status.value


async def test_an_expired_voucher_refuses_and_its_hold_is_released(ln: LnEnv, clock):
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000, expires_in=600)
    created = datetime.fromisoformat(v["created_at"])
    assert datetime.fromisoformat(v["expires_at"]) - created == timedelta(seconds=600)
    forever = await voucher(ln, 1_000)  # no expiry asked for: the default lifetime
    assert datetime.fromisoformat(forever["expires_at"]) - datetime.fromisoformat(
        forever["created_at"]) == timedelta(days=30)
    held = await ln.balance("alice")
    await sweep(ln)  # not due yet
    assert await status(ln, v["id"]) == "open"

    clock.advance(601)
    assert (await ln.client.get(link(v))).json() == EXPIRED
    assert await redeem(ln, v, make_bolt11(100_000, expiry=7200)) == EXPIRED
    assert await ln.balance("alice") == held and await withdrawals(ln) == 0
    await sweep(ln)
    assert await status(ln, v["id"]) == "expired"
    reserve = fee_reserve(100_000, ln.settings)
    assert await ln.balance("alice") == {**held, "available": held["available"] + 100_000
                                         + reserve, "held": held["held"] - 100_000 - reserve}
    assert (await ln.client.get(link(v))).json() == EXPIRED
    r = await ln.client.delete(f"/api/v1/lnurl-withdraw/{v['id']}", headers=ln.auth("alice"))
    assert r.status_code == 409 and "expired" in r.json()["detail"]
    got = await ln.client.get(f"/api/v1/lnurl-withdraw/{v['id']}", headers=ln.auth("alice"))
    assert got.json()["status"] == "expired"
    await sweep(ln)  # again: nothing more
    assert await status(ln, forever["id"]) == "open"
    async with ln.sessions() as s:
        [event] = await list_events(s, action="lnurl_withdraw.expire")
    assert event["object"] == v["id"]
    await ln.check()


async def test_expiry_at_creation_is_checked(ln: LnEnv):
    await ln.fund("alice", FUND)
    url = f"/api/v1/wallets/{ln.wallets['alice'].id}/lnurl-withdraw"
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    soon = (utcnow() + timedelta(hours=2)).isoformat()
    for body in ({"expires_in": 10}, {"expires_at": past},
                 {"expires_in": 600, "expires_at": soon}):
        r = await ln.client.post(url, json={"amount_msat": 1_000, **body},
                                 headers=ln.auth("alice"))
        assert r.status_code == 422, (body, r.text)
        if len(body) == 2:  # a rule over two fields: the domain's refusal, not the schema's
            assert r.json()["type"].endswith("/invalid-input") and "not both" in r.text
    assert (await ln.balance("alice"))["held"] == 0
    r = await ln.client.post(url, json={"amount_msat": 1_000, "expires_at": soon},
                             headers=ln.auth("alice"))
    assert r.status_code == 201 and r.json()["expires_at"].startswith(soon[:16])
    assert (await ln.balance("alice"))["held"] == 1_000 + fee_reserve(1_000, ln.settings)
    await ln.check()


async def test_a_redemption_before_the_expiry_is_not_undone_by_it(ln: LnEnv, clock):
    """Redeemed in time: the sweep after the expiry leaves it used and its payment goes out.
    Had the payment then failed, the voucher reopens and the next sweep expires it."""
    await ln.fund("alice", FUND)
    paid = await voucher(ln, 10_000, expires_in=600)
    failing = await voucher(ln, 20_000, expires_in=600)
    assert await redeem(ln, paid, make_bolt11(10_000)) == {"status": "OK"}
    failing_pr = make_bolt11(20_000)
    assert await redeem(ln, failing, failing_pr) == {"status": "OK"}
    clock.advance(601)
    await sweep(ln)
    assert (await status(ln, paid["id"]), await status(ln, failing["id"])) == ("used", "used")
    node = _FailsOne(fail=failing_pr)
    report = await LightningPayer(ln.sessions, node, ln.settings).step()
    assert (report.succeeded, report.failed) == (1, 1), report
    assert (await status(ln, paid["id"]), await status(ln, failing["id"])) == ("used", "open")
    await sweep(ln)
    assert (await status(ln, paid["id"]), await status(ln, failing["id"])) == \
        ("used", "expired")
    assert await ln.balance("alice") == {"available": FUND - 10_000, "held": 0,
                                         "posted": FUND - 10_000}
    await ln.check()


async def test_redemptions_racing_the_expiry_sweep(ln: LnEnv, clock):
    """Many callbacks and sweeps at once, at the moment of expiry: the voucher ends either
    used (one payment, nothing released) or expired (its hold released), never both."""
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000, expires_in=600)
    k1 = (await ln.client.get(link(v))).json()["k1"]
    clock.advance(600 - 0.05)  # the deadline passes while they run
    calls = [ln.client.get(f"{link(v)}/callback",
                           params={"k1": k1, "pr": make_bolt11(100_000, expiry=7200)})
             for _ in range(3)]
    # A loser finds the voucher used, or claimed by the winner's redemption in progress.
    LOST = ("already used", "this withdraw link is being redeemed; try again in a minute")
    results = await asyncio.gather(*calls, sweep(ln), sweep(ln), return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)], results
    answers = [r.json() for r in results[:3]]
    ok = answers.count({"status": "OK"})
    assert ok <= 1 and all(a in ({"status": "OK"}, EXPIRED) or a["reason"] in LOST
                           for a in answers), answers
    await sweep(ln)
    assert await status(ln, v["id"]) == ("used" if ok else "expired")
    assert await withdrawals(ln) == ok
    reserve = fee_reserve(100_000, ln.settings)
    assert (await ln.balance("alice"))["held"] == (100_000 + reserve if ok else 0)
    await ln.check()


def near(a: datetime, b: datetime) -> bool:
    return abs(a - b) < timedelta(seconds=5)


async def test_a_voucher_gets_the_default_lifetime_and_never_more_than_the_maximum(
        ln: LnEnv, clock):
    """A bearer link without an expiry used to hold its amount forever."""
    await ln.fund("alice", FUND)
    before = await ln.balance("alice")
    v = await voucher(ln, 50_000)
    assert near(datetime.fromisoformat(v["expires_at"]), utcnow() + timedelta(days=30))
    path = f"/api/v1/wallets/{ln.wallets['alice'].id}/lnurl-withdraw"
    for too_long in ({"expires_in": 367 * 86_400},
                     {"expires_at": (utcnow() + timedelta(days=367)).isoformat()}):
        r = await ln.client.post(path, json={"amount_msat": 1_000, **too_long},
                                 headers=ln.auth("alice"))
        assert r.status_code == 422 and "at most 366 days" in r.json()["detail"], r.text
    clock.advance(30 * 86_400 + 1)
    await sweep(ln)
    assert await status(ln, v["id"]) == "expired"
    assert await ln.balance("alice") == before  # the hold came back
    await ln.check()

    settings = ln.settings
    now = utcnow()
    assert default_voucher_expiry(now, settings.model_copy(update={
        "voucher_default_lifetime_days": 0})) == now + timedelta(days=366)
    assert default_voucher_expiry(now, settings.model_copy(update={
        "voucher_default_lifetime_days": 400})) == now + timedelta(days=366)
    assert default_voucher_expiry(now, settings.model_copy(update={
        "voucher_default_lifetime_days": 0, "voucher_max_lifetime_days": 0})) is None


async def test_an_open_vouchers_expiry_can_be_changed_until_it_passes(ln: LnEnv, clock):
    await ln.fund("alice", FUND)
    await ln.fund("bob", FUND)
    v = await voucher(ln, 100_000)
    url = f"/api/v1/lnurl-withdraw/{v['id']}"

    r = await ln.client.patch(url, json={"expires_in": 3600}, headers=ln.auth("alice"))
    assert r.status_code == 200, r.text
    assert near(datetime.fromisoformat(r.json()["expires_at"]), utcnow() + timedelta(hours=1))
    later = utcnow() + timedelta(days=100)
    r = await ln.client.patch(url, json={"expires_at": later.isoformat()},
                              headers=ln.auth("alice"))
    assert r.status_code == 200 and datetime.fromisoformat(r.json()["expires_at"]) == later

    refused = [  # each changes nothing
        (ln.auth("bob"), {"expires_in": 600}, 404),  # not bob's voucher
        (ln.auth("alice"), {}, 422),
        (ln.auth("alice"), {"expires_in": 600, "expires_at": later.isoformat()}, 422),
        (ln.auth("alice"), {"expires_in": 59}, 422),
        (ln.auth("alice"), {"expires_in": 367 * 86_400}, 422),
    ]
    for headers, body, code in refused:
        r = await ln.client.patch(url, json=body, headers=headers)
        assert r.status_code == code, (body, r.text)
    got = await ln.client.get(url, headers=ln.auth("alice"))
    assert datetime.fromisoformat(got.json()["expires_at"]) == later

    r = await ln.client.patch(url, json={"expires_in": 600}, headers=ln.auth("alice"))
    assert r.status_code == 200
    clock.advance(601)  # past it, before the sweep marked it: a past expiry stays past
    r = await ln.client.patch(url, json={"expires_in": 86_400}, headers=ln.auth("alice"))
    assert r.status_code == 409 and "expired" in r.json()["detail"]
    assert (await ln.client.get(link(v))).json() == EXPIRED

    used = await voucher(ln, 10_000)
    assert (await redeem(ln, used, make_bolt11(10_000, expiry=7200)))["status"] == "OK"
    r = await ln.client.patch(f"/api/v1/lnurl-withdraw/{used['id']}", json={"expires_in": 600},
                              headers=ln.auth("alice"))
    assert r.status_code == 409 and "used" in r.json()["detail"]
    async with ln.sessions() as s:
        events = await list_events(s, action="lnurl_withdraw.expiry")
    assert [e["object"] for e in events] == [v["id"]] * 3
    await ln.check()


async def test_cancelling_a_voucher_past_its_expiry_before_the_sweep_releases_it_once(
        ln: LnEnv, clock):
    """Past its expiry but not marked yet: a cancel releases the hold (what the expiry would
    do), the sweep then finds nothing, and a second cancel is a 409 (api.md)."""
    await ln.fund("alice", FUND)
    before = await ln.balance("alice")
    v = await voucher(ln, 50_000, expires_in=600)
    clock.advance(601)
    r = await ln.client.delete(f"/api/v1/lnurl-withdraw/{v['id']}", headers=ln.auth("alice"))
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    assert await ln.balance("alice") == before
    await sweep(ln)
    assert await status(ln, v["id"]) == "canceled"
    assert await ln.balance("alice") == before
    r = await ln.client.delete(f"/api/v1/lnurl-withdraw/{v['id']}", headers=ln.auth("alice"))
    assert r.status_code == 409 and "canceled" in r.json()["detail"]
    await ln.check()
