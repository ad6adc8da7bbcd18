"""LNURL-withdraw vouchers (LUD-03): the hold at creation, single use (also under concurrent
callbacks), the payment through the Lightning payer, internal redemption, cancellation; the
link's secret token (not the voucher id, which logs, audit rows and ledger refs show) is what
opens a voucher."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select, update

from satvault.accounts.security import hash_secret
from satvault.audit.service import list_events
from satvault.db import create_engine
from satvault.ledger.models import LedgerTransfer
from satvault.lightning.lnurl import decode_lnurl, encode_lnurl
from satvault.lightning.lnurl_models import LnurlWithdrawVoucher
from satvault.lightning.models import LnPayment
from satvault.lightning.payments import LightningPayer, fee_reserve
from satvault.migrate import upgrade
from satvault.payouts.models import Withdrawal
from satvault.web.app import create_app
from tests.lightning_lnurl.conftest import BASE, LnEnv, lnurl_settings
from tests.lightning_lnurl.fakes import make_bolt11

FUND = 1_000_000


async def voucher(ln: LnEnv, amount: int = 100_000, who: str = "alice", **body) -> dict:
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets[who].id}/lnurl-withdraw",
                             json={"amount_msat": amount, "description": "gift", **body},
                             headers=ln.auth(who))
    assert r.status_code == 201, r.text
    return r.json()


def link(v: dict) -> str:
    """The path the voucher's LNURL opens (``/lnurlw/<its secret token>``)."""
    return urlsplit(decode_lnurl(v["lnurl"])).path


async def redeem(ln: LnEnv, v: dict, pr: str, k1: str | None = None) -> dict:
    """Call the voucher's callback as a wallet would (with its k1 unless told otherwise)."""
    if k1 is None:
        async with ln.sessions() as s:
            row = await s.get(LnurlWithdrawVoucher, v["id"])
            assert row is not None
            k1 = row.k1
    r = await ln.client.get(f"{link(v)}/callback", params={"k1": k1, "pr": pr})
    assert r.status_code == 200
    return r.json()


async def withdrawals(ln: LnEnv) -> int:
    async with ln.sessions() as s:
        return (await s.execute(select(func.count()).select_from(Withdrawal))).scalar_one()


async def test_create_holds_amount_and_reserve(ln: LnEnv):
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    reserve = fee_reserve(100_000, ln.settings)
    assert v["status"] == "open" and v["amount_msat"] == v["min_msat"] == 100_000
    assert v["held_msat"] == 100_000 + reserve
    token = link(v).removeprefix("/lnurlw/")
    assert link(v) == f"/lnurlw/{token}" and v["id"] not in token and len(token) >= 22
    assert await ln.balance("alice") == {"available": FUND - 100_000 - reserve,
                                         "held": 100_000 + reserve, "posted": FUND}
    r = await ln.client.get(link(v))
    request = r.json()
    assert r.headers["access-control-allow-origin"] == "*"
    assert request["tag"] == "withdrawRequest" and len(request["k1"]) == 64
    assert request["callback"] == f"http://lnurl.test/lnurlw/{token}/callback"
    assert (request["minWithdrawable"], request["maxWithdrawable"]) == (100_000, 100_000)
    assert request["defaultDescription"] == "gift"
    got = await ln.client.get(f"/api/v1/lnurl-withdraw/{v['id']}", headers=ln.auth("alice"))
    # The link is shown once, when the voucher is created: only its hash is stored.
    assert got.status_code == 200 and got.json()["id"] == v["id"]
    assert got.json()["lnurl"] is None
    assert (await ln.client.get(f"/api/v1/lnurl-withdraw/{v['id']}",
                                headers=ln.auth("bob"))).status_code == 404
    await ln.check()


async def test_create_refusals(ln: LnEnv):
    await ln.fund("alice", 50_000)
    url = f"/api/v1/wallets/{ln.wallets['alice'].id}/lnurl-withdraw"
    cases = [({"amount_msat": 100_000}, 422, "insufficient-funds"),
             ({"amount_msat": 0}, 422, "invalid-request"),
             ({"amount_msat": 1_000, "min_msat": 2_000}, 422, "invalid-input"),
             ({"amount_msat": 10**13}, 422, "invalid-input")]
    for body, status, slug in cases:
        r = await ln.client.post(url, json=body, headers=ln.auth("alice"))
        assert (r.status_code, r.json()["type"].rsplit("/", 1)[1]) == (status, slug), r.text
        if slug == "insufficient-funds":
            # Found from outside: the detail was the ledger's "transfer 'wd:…:hold'
            # rejected: exceeds_credits", an internal key and a code, not what was wrong.
            assert r.json()["detail"] == (
                "the wallet's available balance does not cover this (the amount, and any "
                "fee reserve held with it)"), r.text
            assert r.json()["result"] == "exceeds_credits"
    assert (await ln.client.post(url, json={"amount_msat": 1_000},
                                 headers=ln.auth("bob"))).status_code == 404
    assert (await ln.client.post(url, json={"amount_msat": 1_000},
                                 headers=ln.auth("alice_read"))).status_code == 403
    assert await ln.balance("alice") == {"available": 50_000, "held": 0, "posted": 50_000}
    await ln.check()


async def test_idempotency_key_creates_one_voucher(ln: LnEnv):
    await ln.fund("alice", FUND)
    url = f"/api/v1/wallets/{ln.wallets['alice'].id}/lnurl-withdraw"
    headers = {**ln.auth("alice"), "Idempotency-Key": "v-1"}
    first = await ln.client.post(url, json={"amount_msat": 5_000}, headers=headers)
    again = await ln.client.post(url, json={"amount_msat": 5_000}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    # The stored answer (kept a day or more) does not carry the link's secret.
    assert again.json() == {**first.json(), "lnurl": None} and first.json()["lnurl"]
    async with ln.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(LnurlWithdrawVoucher))
                ).scalar_one() == 1
    await ln.check()


async def test_redeem_pays_once_through_the_payer(ln: LnEnv):
    await ln.fund("alice", FUND)
    ln.lightning.fee_msat = 120
    v = await voucher(ln, 100_000)
    pr = make_bolt11(100_000)  # the redeeming wallet's invoice, from another node
    assert await redeem(ln, v, pr) == {"status": "OK"}
    async with ln.sessions() as s:
        row = await s.get(LnurlWithdrawVoucher, v["id"])
        payment = (await s.execute(select(LnPayment))).scalar_one()
    assert row is not None and row.status == "used" and row.withdrawal_id is not None
    assert payment.withdrawal_id == row.withdrawal_id and payment.status == "pending"
    reserve = fee_reserve(100_000, ln.settings)
    assert (await ln.balance("alice"))["held"] == 100_000 + reserve  # the payment's own hold

    assert await redeem(ln, v, make_bolt11(100_000)) == {"status": "ERROR",
                                                         "reason": "already used"}
    assert (await ln.client.get(link(v))).json()["reason"] == "already used"

    report = await LightningPayer(ln.sessions, ln.lightning, ln.settings).step()
    assert report.succeeded == 1 and ln.lightning.paid == [pr]
    assert await ln.balance("alice") == {"available": FUND - 100_120, "held": 0,
                                         "posted": FUND - 100_120}
    assert await withdrawals(ln) == 1
    await ln.check()


async def test_concurrent_callbacks_pay_exactly_once(ln: LnEnv):
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    k1 = (await ln.client.get(link(v))).json()["k1"]
    calls = [ln.client.get(f"{link(v)}/callback",
                           params={"k1": k1, "pr": make_bolt11(100_000)}) for _ in range(4)]
    answers = [r.json() for r in await asyncio.gather(*calls)]
    assert answers.count({"status": "OK"}) == 1, answers
    # Each loser finds the voucher used, or claimed by the winner's redemption in progress.
    assert all(a["reason"] in ("already used", "this withdraw link is being redeemed; try "
                                               "again in a minute")
               for a in answers if a["status"] == "ERROR"), answers
    assert await withdrawals(ln) == 1
    await ln.check()


@pytest.mark.parametrize(("pr", "reason"), [
    (make_bolt11(200_000), "this link pays 100000 to 100000 msat"),
    (make_bolt11(None), "must carry an amount"),
    (make_bolt11(100_000, currency="bc"), "network"),
    ("lnbcrt1nonsense", "BOLT11"),
])
async def test_refused_invoices_leave_the_voucher_open(ln: LnEnv, pr, reason):
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    answer = await redeem(ln, v, pr)
    assert answer["status"] == "ERROR" and reason in answer["reason"], answer
    assert (await ln.client.get(link(v))).json()["tag"] == "withdrawRequest"
    assert await redeem(ln, v, make_bolt11(100_000)) == {"status": "OK"}
    await ln.check()


async def test_wrong_k1_and_partial_amounts(ln: LnEnv):
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000, min_msat=10_000)
    assert (await redeem(ln, v, make_bolt11(50_000), k1="0" * 64))["reason"] == \
        "unknown withdraw link or wrong k1"
    assert (await ln.client.get("/lnurlw/lnw_nope/callback",
                                params={"k1": "0" * 64, "pr": "x"})).json()["status"] == "ERROR"
    assert (await ln.client.get(f"{link(v)}/callback")).json()["reason"] == \
        "k1 and pr are required"
    # Less than the maximum: the rest of the hold goes back to the wallet.
    assert await redeem(ln, v, make_bolt11(50_000)) == {"status": "OK"}
    reserve = fee_reserve(50_000, ln.settings)
    assert await ln.balance("alice") == {"available": FUND - 50_000 - reserve,
                                         "held": 50_000 + reserve, "posted": FUND}
    await ln.check()


async def test_redeem_with_an_invoice_of_this_platform_settles_internally(ln: LnEnv):
    await ln.fund("alice", FUND)
    v = await voucher(ln, 30_000)
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['bob'].id}/lightning-address",
                             json={"username": "bob"}, headers=ln.auth("bob"))
    assert r.status_code == 201
    pr = (await ln.client.get("/lnurlp/bob/callback", params={"amount": 30_000})).json()["pr"]
    assert await redeem(ln, v, pr) == {"status": "OK"}
    assert await ln.balance("bob") == {"available": 30_000, "held": 0, "posted": 30_000}
    assert await ln.balance("alice") == {"available": FUND - 30_000, "held": 0,
                                         "posted": FUND - 30_000}
    assert ln.lightning.paid == []
    # Alice's own invoice cannot redeem her own voucher.
    v2 = await voucher(ln, 1_000)
    await ln.client.post(f"/api/v1/wallets/{ln.wallets['alice'].id}/lightning-address",
                         json={"username": "alice"}, headers=ln.auth("alice"))
    own = (await ln.client.get("/lnurlp/alice/callback", params={"amount": 1_000})).json()["pr"]
    assert "own wallet" in (await redeem(ln, v2, own))["reason"]
    await ln.check()


async def test_cancel_releases_the_hold(ln: LnEnv):
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    url = f"/api/v1/lnurl-withdraw/{v['id']}"
    assert (await ln.client.delete(url, headers=ln.auth("bob"))).status_code == 404
    assert (await ln.client.delete(url, headers=ln.auth("alice_read"))).status_code == 403
    r = await ln.client.delete(url, headers=ln.auth("alice"))
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert await ln.balance("alice") == {"available": FUND, "held": 0, "posted": FUND}
    assert (await redeem(ln, v, make_bolt11(100_000), k1="0" * 64))["status"] == "ERROR"
    assert (await ln.client.get(link(v))).json()["reason"] == \
        "this withdraw link was canceled"
    again = await ln.client.delete(url, headers=ln.auth("alice"))
    assert again.status_code == 409 and "canceled" in again.json()["detail"]
    used = await voucher(ln, 1_000)
    assert await redeem(ln, used, make_bolt11(1_000)) == {"status": "OK"}
    r = await ln.client.delete(f"/api/v1/lnurl-withdraw/{used['id']}", headers=ln.auth("alice"))
    assert r.status_code == 409 and "used" in r.json()["detail"]
    await ln.check()


async def test_the_voucher_id_does_not_open_the_voucher(ln: LnEnv):
    """The id is what the audit log, the ledger and the logs show; the link's token alone
    opens the voucher, and the token is written nowhere but in the LNURL."""
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    token = link(v).removeprefix("/lnurlw/")
    async with ln.sessions() as s:
        [created] = await list_events(s, action="lnurl_withdraw.create")
        refs = (await s.execute(select(LedgerTransfer.id, LedgerTransfer.ref))).all()
    seen = created["object"]
    assert seen == v["id"] and token not in str(created)
    assert not [row for row in refs if token in str(row)]
    k1 = (await ln.client.get(link(v))).json()["k1"]
    assert (await ln.client.get(f"/lnurlw/{seen}")).json() == {
        "status": "ERROR", "reason": "unknown withdraw link"}
    r = await ln.client.get(f"/lnurlw/{seen}/callback",
                            params={"k1": k1, "pr": make_bolt11(100_000)})
    assert r.json() == {"status": "ERROR", "reason": "unknown withdraw link or wrong k1"}
    assert (await ln.client.get(f"/lnurlw/{token[:-1]}")).json()["status"] == "ERROR"
    got = await ln.client.get(f"/api/v1/lnurl-withdraw/{seen}", headers=ln.auth("alice"))
    assert got.json()["status"] == "open" and await withdrawals(ln) == 0
    # The whole flow with the token: the request, the callback, then the link is spent.
    request = (await ln.client.get(link(v))).json()
    assert request["callback"] == f"{BASE}/lnurlw/{token}/callback"
    r = await ln.client.get(request["callback"], params={"k1": request["k1"],
                                                         "pr": make_bolt11(100_000)})
    assert r.json() == {"status": "OK"} and await withdrawals(ln) == 1
    assert (await ln.client.get(link(v))).json()["reason"] == "already used"
    got = await ln.client.get(f"/api/v1/lnurl-withdraw/{seen}", headers=ln.auth("alice"))
    assert got.json()["status"] == "used" and got.json()["withdrawal_id"]
    await ln.check()


async def test_each_voucher_has_its_own_token(ln: LnEnv):
    await ln.fund("alice", FUND)
    first, second = await voucher(ln, 1_000), await voucher(ln, 1_000)
    assert link(first) != link(second)
    assert await redeem(ln, second, make_bolt11(1_000)) == {"status": "OK"}
    assert (await ln.client.get(link(first))).json()["tag"] == "withdrawRequest"
    await ln.check()


async def test_a_voucher_from_before_tokens_redeems_with_its_printed_link(ln: LnEnv):
    """A voucher as the migration leaves it (its token is its old id): its printed LNURL,
    ``/lnurlw/<id>``, still pays, once."""
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    async with ln.sessions() as s, s.begin():
        await s.execute(update(LnurlWithdrawVoucher).where(LnurlWithdrawVoucher.id == v["id"])
                        .values(link_hash=hash_secret(v["id"])))
    printed = {**v, "lnurl": encode_lnurl(f"{BASE}/lnurlw/{v['id']}")}
    request = (await ln.client.get(link(printed))).json()
    assert request["callback"] == f"{BASE}/lnurlw/{v['id']}/callback"
    assert (await ln.client.get(link(v))).json()["reason"] == "unknown withdraw link"
    assert await redeem(ln, printed, make_bolt11(100_000)) == {"status": "OK"}
    assert await redeem(ln, printed, make_bolt11(100_000)) == {"status": "ERROR",
                                                               "reason": "already used"}
    assert await withdrawals(ln) == 1
    await ln.check()


def _voucher_before_tokens(path: str) -> None:
    """A database at the revision before link tokens, holding one open voucher."""
    upgrade(f"sqlite+aiosqlite:///{path}", "0044_coinbase_payments")
    with sqlite3.connect(path) as db:  # foreign keys off: the voucher alone is enough here
        db.execute(
            "INSERT INTO lnurl_withdraw_vouchers (id, wallet_id, k1, min_msat, amount_msat,"
            " reserve_msat, description, status, hold_id, created_at) VALUES ("
            "'lnw_printedbefore0001', 'wal_x', ?, 1000, 2000, 10, 'old', 'open',"
            " 'lnurlw:lnw_printedbefore0001:hold', '2026-12-01 00:00:00.000000')", ("ab" * 32,))


async def test_the_migration_keeps_printed_links_working(tmp_path):
    path = str(tmp_path / "old.db")
    await asyncio.to_thread(_voucher_before_tokens, path)
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{path}")
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    app = create_app(lnurl_settings(f"sqlite+aiosqlite:///{path}", tmp_path), engine=engine,
                     start_workers=False)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            request = (await client.get("/lnurlw/lnw_printedbefore0001")).json()
    finally:
        await engine.dispose()
    assert request["tag"] == "withdrawRequest" and request["k1"] == "ab" * 32
    assert request["callback"] == f"{BASE}/lnurlw/lnw_printedbefore0001/callback"


async def test_an_invoice_about_to_expire_leaves_the_voucher_open(ln: LnEnv, clock):
    """The node would have too little time to pay it: refused before the voucher is claimed,
    the voucher's hold in place; an expired invoice keeps its own reason."""
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    held = await ln.balance("alice")
    soon, gone = make_bolt11(100_000, expiry=3600), make_bolt11(100_000, expiry=60)
    clock.advance(3600 - 15)
    answer = await redeem(ln, v, soon)
    assert answer["status"] == "ERROR", answer
    assert re.search(r"expires in 1?\d s; .* at least 60 s", answer["reason"]), answer
    assert await redeem(ln, v, gone) == {"status": "ERROR",
                                         "reason": "this invoice has expired"}
    assert await ln.balance("alice") == held and await withdrawals(ln) == 0
    assert (await ln.client.get(link(v))).json()["tag"] == "withdrawRequest"
    # (the fake's invoices are dated by the real clock, an hour behind this test's)
    assert await redeem(ln, v, make_bolt11(100_000, expiry=7200)) == {"status": "OK"}
    await ln.check()


async def test_an_own_invoice_about_to_expire_redeems_internally(ln: LnEnv, clock):
    await ln.fund("alice", FUND)
    v = await voucher(ln, 30_000)
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['bob'].id}/lightning-address",
                             json={"username": "bob"}, headers=ln.auth("bob"))
    assert r.status_code == 201
    pr = (await ln.client.get("/lnurlp/bob/callback", params={"amount": 30_000})).json()["pr"]
    clock.advance(ln.settings.ln_invoice_expiry_seconds - 5)
    assert await redeem(ln, v, pr) == {"status": "OK"}
    assert (await ln.balance("bob"))["available"] == 30_000
    await ln.check()


async def test_open_vouchers_without_an_expiry_expire_after_the_upgrade(tmp_path, clock):
    """Migration 0070: an open voucher made before vouchers had a default expiry was a bearer
    link for ever. It now expires 30 days after the upgrade, redeemable until then; a voucher
    with an expiry of its own, and one no longer open, keep theirs."""
    path = str(tmp_path / "old.db")
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url, "0069_refusals_by_person")
    rows = (("lnw_forever", "open", None), ("lnw_dated", "open", "2027-03-01 00:00:00.000000"),
            ("lnw_used", "used", None), ("lnw_gone", "canceled", None))
    with sqlite3.connect(path) as db:  # foreign keys off: the vouchers alone are enough here
        for n, (vid, status, expires) in enumerate(rows):
            db.execute(
                "INSERT INTO lnurl_withdraw_vouchers (id, link_hash, wallet_id, k1, min_msat, "
                "amount_msat, reserve_msat, description, status, hold_id, created_at, "
                "closed_at, expires_at) VALUES (?, ?, 'wal_x', ?, 1000, 2000, 10, 'old', ?, ?, "
                "'2026-11-01 00:00:00.000000', ?, ?)",
                (vid, hash_secret(f"token-{vid}"), f"{n:02d}" * 32, status,
                 f"lnurlw:{vid}:hold", None if status == "open" else "2026-11-02 00:00:00",
                 expires))
    before_upgrade = clock.now()
    await asyncio.to_thread(upgrade, url)
    after_upgrade = clock.now()
    engine = create_engine(url)
    app = create_app(lnurl_settings(url, tmp_path), engine=engine, start_workers=False)
    try:
        async with engine.connect() as c:
            got = dict((await c.execute(select(LnurlWithdrawVoucher.id,
                                               LnurlWithdrawVoucher.expires_at))).all())
        month = timedelta(days=30)
        assert before_upgrade + month <= got["lnw_forever"] <= after_upgrade + month
        assert got["lnw_dated"].isoformat() == "2027-03-01T00:00:00+00:00"
        assert got["lnw_used"] is None and got["lnw_gone"] is None
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            before = (await client.get("/lnurlw/token-lnw_forever")).json()
            assert before["tag"] == "withdrawRequest", before
            clock.advance(seconds=30 * 86400 + 1)
            after = (await client.get("/lnurlw/token-lnw_forever")).json()
            assert after == {"status": "ERROR", "reason": "this withdraw link has expired"}
    finally:
        await engine.dispose()
