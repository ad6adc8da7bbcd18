"""An invoice of ours that a payment held for review took off the node is ``reserved``.

The held payment keeps it until its case decides: the payee's checkout page, the invoice's
public status and the API say a payment is under review instead of showing a BOLT11 that is
dead on the node, and any other payment of it is refused before anything is touched (no node
call, no screening, no hold). Only one payment can reserve an invoice: a second one held at
the same moment, or one held while another paid it, is refused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.lightning.models import LnInvoiceStatus
from satvault.payouts.models import Withdrawal
from satvault.risk.lists import refresh_sanctions
from satvault.risk.models import RiskCase, RiskDecision
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import settle_all, shop  # noqa: F401
from tests.lightning.test_lightning import _payers_key, fund
from tests.lightning.test_refused_internal import (
    _checkout_bolt11,
    _pay,
    _row,
    _store_invoice,
    _wallet_invoice,
)
from tests.risk.conftest import default_doc
from tests.risk.test_withdrawals import keys
from tests.risk.test_withdrawals import make_live as risk_live

SAT = 1000
FUNDS = 100_000 * SAT
UNDER_REVIEW = "a payment of this invoice is under review"


async def _review_big_payments(env: LnEnv) -> None:
    """Rules that hold every payment of 10,000 sat or more for review."""
    doc = default_doc()
    doc["rules"].append({"id": "big", "score": 60, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "out"},
        {"field": "amount_msat", "op": "gte", "value": 10_000 * SAT}]}})
    await risk_live(env, doc)


async def _payer(env: LnEnv, email: str) -> tuple[Wallet, dict[str, str]]:
    """Another funded wallet and a key that pays from it."""
    wallet = await env.wallet_for(email)
    await fund(env, wallet, FUNDS)
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=wallet.owner_id,
                                            scopes=["wallet:read", "withdrawals:write"])
    return wallet, {"Authorization": f"Bearer {token}"}


async def _pay_from(c: Any, wallet: Wallet, auth: dict[str, str], key: str, bolt11: str,
                    amount_msat: int | None = None) -> Any:
    return await c.post(f"/api/v1/wallets/{wallet.id}/withdrawals",
                        headers={**auth, "Idempotency-Key": key},
                        json={"destination": bolt11,
                              **({"amount_msat": amount_msat} if amount_msat else {})})


async def _counts(env: LnEnv) -> tuple[int, int, int]:
    """Withdrawals, risk decisions and risk cases there are."""
    async with env.sessions() as s:
        return tuple([(await s.execute(select(func.count()).select_from(t))).scalar_one()
                      for t in (Withdrawal, RiskDecision, RiskCase)])  # type: ignore[return-value]


def _count_node_cancels(env: LnEnv) -> list[str]:
    """The payment hashes the node is asked to cancel from now on."""
    node = env.runtime.lightning
    assert node is not None
    cancel, calls = node.cancel_invoice, []

    async def counted(payment_hash: str) -> None:
        calls.append(payment_hash)
        await cancel(payment_hash)

    node.cancel_invoice = counted  # type: ignore[method-assign]
    return calls


async def _case_of(env: LnEnv, withdrawal_id: str) -> str:
    async with env.sessions() as s:
        case: str = (await s.execute(select(RiskCase.id).join(
            RiskDecision, RiskDecision.id == RiskCase.decision_id).where(
            RiskDecision.subject_id == withdrawal_id))).scalar_one()
    return case


@pytest.mark.parametrize("payee", ["store", "wallet", "wallet-amountless"])
async def test_a_held_payment_reserves_the_invoice_and_says_so(
        lnenv: LnEnv, shop, payee: str):  # noqa: F811
    """Held for review, the payee's invoice is ``reserved``: the checkout page says a payment
    is under review (no dead QR code, no BOLT11 in its status or the API), a wallet's deposit
    says ``reserved``; another wallet paying it (on the API's fast path, or the general one
    for an amountless invoice) gets ``409 invoice-under-review`` and nothing changes: the
    node is not asked again, nothing is screened, held or written."""
    env = lnenv
    await _review_big_payments(env)
    await fund(env, env.wallet, FUNDS)
    auth = await _payers_key(env)
    carol, carols = await _payer(env, "carol@example.com")
    amountless = payee.endswith("amountless")
    amount = 20_000 * SAT
    async with api_client(env) as c:
        if payee == "store":
            bill = await _store_invoice(c, shop, "inv", 20_000)
        else:
            bill = await _wallet_invoice(c, env, None if amountless else amount)
        held = await _pay(c, env, auth, "held", bill["bolt11"], amount if amountless else None)
        assert held.status_code == 201 and held.json()["status"] == "review", held.text
        assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.RESERVED
        if payee == "store":
            status = (await c.get(f"/i/{bill['id']}/status")).json()
            assert status["state"] == "review", status
            assert status["destinations"]["bolt11"] is None, status
            assert status["destinations"]["bip21"] is None, status
            assert (await c.get(f"/i/{bill['id']}/qr/lightning.svg")).status_code == 404
            page = await c.get(f"/i/{bill['id']}")
            assert "Payment under review" in page.text and bill["bolt11"] not in page.text
            fr = await c.get(f"/i/{bill['id']}?lang=fr")
            assert "Paiement en cours de vérification" in fr.text, fr.text
            api = (await c.get(f"/api/v1/invoices/{bill['id']}", headers=shop["read"])).json()
            assert api["payment_under_review"] is True, api
            assert api["payment_methods"]["lightning"]["bolt11"] is None, api
            listed = (await c.get(f"/api/v1/stores/{shop['store']}/invoices",
                                  headers=shop["read"])).json()["items"]
            assert [i["payment_under_review"] for i in listed] == [True], listed
        else:
            seen = await c.get(f"/api/v1/deposits/{bill['id']}", headers=bill["read"])
            assert seen.json()["status"] == "reserved", seen.text
        before, cancels = await _counts(env), _count_node_cancels(env)
        carols_balance = await env.balances(carol)
        other = await _pay_from(c, carol, carols, "other", bill["bolt11"],
                                amount if amountless else None)
        assert other.status_code == 409, other.text
        assert other.json()["type"].endswith("/invoice-under-review"), other.text
        assert other.json()["detail"] == UNDER_REVIEW, other.text
        assert cancels == [] and await _counts(env) == before
        assert await env.balances(carol) == carols_balance
        assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.RESERVED
        # The payer whose payment is held is refused a second one alike.
        again = await _pay(c, env, auth, "again", bill["bolt11"],
                           amount if amountless else None)
        assert again.status_code == 409, again.text
        assert cancels == [] and await _counts(env) == before
    await env.check()


@pytest.mark.parametrize("money", ["release", "return"])
async def test_the_reserved_invoice_waits_for_its_case(lnenv: LnEnv, shop,  # noqa: F811
                                                       money: str):
    """The invoice stays reserved whatever else happens meanwhile (another payer, refused
    before the rules, even ones that would reject it), until the case decides: released, it
    is paid and the checkout page says so; returned, it is ``canceled`` and the checkout page
    shows a fresh BOLT11 that a customer pays."""
    env = lnenv
    _, admin = await keys(env)
    await _review_big_payments(env)
    await fund(env, env.wallet, FUNDS)
    auth = await _payers_key(env)
    carol, carols = await _payer(env, "carol@example.com")
    async with api_client(env) as c:
        bill = await _store_invoice(c, shop, "inv", 20_000)
        held = await _pay(c, env, auth, "held", bill["bolt11"])
        assert held.status_code == 201 and held.json()["status"] == "review", held.text
        async with env.sessions() as s, s.begin():  # rules that would reject carol's
            await refresh_sanctions(s, text=f"wallet:{bill['payee']}\n", actor="user:admin")
        other = await _pay_from(c, carol, carols, "other", bill["bolt11"])
        assert other.status_code == 409 and other.json()["detail"] == UNDER_REVIEW, other.text
        assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.RESERVED
        async with env.sessions() as s, s.begin():
            await refresh_sanctions(s, text="", actor="user:admin")
        case = await _case_of(env, held.json()["id"])
        looked = await c.post(f"/api/v1/admin/risk/cases/{case}/investigate", headers=admin,
                              json={})
        assert looked.status_code == 200, looked.text
        closed = await c.post(f"/api/v1/admin/risk/cases/{case}/close", headers=admin,
                              json={"resolution": "false_positive" if money == "release"
                                    else "confirmed_risk", "money": money})
        assert closed.status_code == 200, closed.text
        status = (await c.get(f"/i/{bill['id']}/status")).json()
        api = (await c.get(f"/api/v1/invoices/{bill['id']}", headers=shop["read"])).json()
        assert api["payment_under_review"] is False, api
        if money == "release":
            assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.PAID
            assert status["state"] == "paid" and api["status"] == "settled", (status, api)
            assert (await env.balances())["available"] == FUNDS - 20_000 * SAT
        else:
            assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.CANCELED
            assert status["state"] == "waiting" and api["status"] == "new", (status, api)
            fresh = await _checkout_bolt11(c, bill["id"])
            assert fresh is not None and fresh != bill["bolt11"]
            assert env.network.pay("customer1", fresh).status.value.upper() == "SUCCEEDED"
            await settle_all(env)
            got = await c.get(f"/api/v1/invoices/{bill['id']}", headers=shop["read"])
            assert got.json()["status"] == "settled", got.text
            assert (await env.balances())["available"] == FUNDS
    await env.check()


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_create": "1000/second"}])
@pytest.mark.parametrize("second", ["held", "paid"])
async def test_one_invoice_is_reserved_by_one_payment(lnenv: LnEnv, second: str):
    """Two wallets pay one invoice at the same moment. Before, both took it off the node and
    both were held for one invoice (the second release refused), or a payment was held for
    an invoice another paid meanwhile; then the second came after the first under the
    invoice's row. Since migration 0082 the second is refused before the node while the
    first's take is in flight (``409``, "being paid by another request"), or, once the
    first is decided, as the invoice then is (reserved for review, or paid): one payment
    takes it off the node, nothing else moves."""
    env = lnenv
    await _review_big_payments(env)
    await fund(env, env.wallet, FUNDS)
    auth = await _payers_key(env)
    carol, carols = await _payer(env, "carol@example.com")
    cancels = _count_node_cancels(env)
    async with api_client(env) as c:
        # Amountless: each payer names its amount, big (held) or small (approved).
        bill = await _wallet_invoice(c, env, None)
        answers = await asyncio.wait_for(asyncio.gather(
            _pay(c, env, auth, "first", bill["bolt11"], 20_000 * SAT),
            _pay_from(c, carol, carols, "second", bill["bolt11"],
                      (20_000 if second == "held" else 1_000) * SAT)), 30)
        ok = [a for a in answers if a.status_code == 201]
        refused = [a for a in answers if a.status_code != 201]
        assert len(ok) == 1 and len(refused) == 1, [a.text for a in answers]
        assert refused[0].status_code in (409, 422), refused[0].text
        assert refused[0].json()["detail"] in (
            UNDER_REVIEW, "this invoice is paid",
            "this invoice is being paid by another request"), refused[0].text
        assert len(cancels) == 1
        row = await _row(env, bill["bolt11"])
        if ok[0].json()["status"] == "review":
            assert row.status == LnInvoiceStatus.RESERVED
        else:  # carol's small payment came first and paid it
            assert second == "paid" and ok[0].json()["status"] == "confirmed", ok[0].text
            assert row.status == LnInvoiceStatus.PAID
        async with env.sessions() as s:
            held = (await s.execute(select(func.count()).select_from(Withdrawal).where(
                Withdrawal.status == "review"))).scalar_one()
        assert held == (1 if ok[0].json()["status"] == "review" else 0)
    await env.check()


def test_migration_0064_reserves_the_invoices_held_payments_took(tmp_path):
    """Migration 0064: an open invoice an internal payment in ``review`` names in
    ``risk_held_invoices`` (the BOLT11 as it was kept, in any case) becomes ``reserved``;
    one whose held payment was decided, one a Lightning (not internal) payment holds, and an
    unrelated one stay as they were. Downgraded, reserved ones are open again."""
    import sqlite3

    from alembic import command

    from satvault.migrate import alembic_config, upgrade

    path = tmp_path / "m.db"
    url = f"sqlite:///{path}"
    upgrade(url, "0061_owner_limits")
    at = "2026-12-01 00:00:00"
    with sqlite3.connect(path) as db:
        for name, status in (("held", "open"), ("decided", "open"), ("external", "open"),
                             ("other", "open"), ("paid", "paid")):
            db.execute("INSERT INTO ln_invoices (id, wallet_id, purpose, payment_hash, bolt11, "
                       "amount_msat, description, status, paid_msat, internal, expires_at, "
                       "created_at) VALUES (?, 'wal_b', 'deposit', ?, ?, 1000, '', ?, ?, 0, "
                       "?, ?)", (f"lni_{name}", name.ljust(64, "0"), f"lnbcrt{name}", status,
                                 1000 if status == "paid" else None, at, at))
        for wid, method, status, bolt11 in (
                ("wd_held", "internal", "review", "LNBCRTHELD"),
                ("wd_decided", "internal", "cancelled", "lnbcrtdecided"),
                ("wd_external", "lightning", "review", "lnbcrtexternal"),
                ("wd_paid", "internal", "review", "lnbcrtpaid")):
            db.execute("INSERT INTO withdrawals (id, wallet_id, method, destination, "
                       "amount_msat, fee_reserve_msat, status, hold_id, created_at, updated_at) "
                       "VALUES (?, 'wal_a', ?, ?, 1000, 0, ?, ?, ?, ?)",
                       (wid, method, bolt11, status, f"wd:{wid}:hold", at, at))
            db.execute("INSERT INTO risk_held_invoices (withdrawal_id, bolt11) VALUES (?, ?)",
                       (wid, bolt11))
    upgrade(url)

    def statuses() -> dict[str, str]:
        with sqlite3.connect(path) as db:
            return dict(db.execute("SELECT id, status FROM ln_invoices"))

    assert statuses() == {"lni_held": "reserved", "lni_decided": "open",
                          "lni_external": "open", "lni_other": "open", "lni_paid": "paid"}
    command.downgrade(alembic_config(url), "0061_owner_limits")
    assert statuses()["lni_held"] == "open"
    upgrade(url)
    assert statuses()["lni_held"] == "reserved"


async def test_a_held_payment_of_a_store_invoice_pays_no_more_than_it_asks_for(
        lnenv: LnEnv, shop):  # noqa: F811
    """Found from outside (stop 42): the first BOLT11 of a store invoice, paid internally
    after part of the invoice was paid on-chain, was refused (it asks for less now), but the
    same payment held for review was reserved, and its release paid the invoice over (24,000
    sat for 20,000). The reservation is refused the same way; and a payment held before the
    invoice was paid in full otherwise is refused at its release (the case can only return
    the money)."""
    from satvault.invoices.tasks import refresh_open_invoices
    from tests.invoices.test_invoices import create

    env = lnenv
    _, admin = await keys(env)
    await _review_big_payments(env)  # 10,000 sat or more: held for review
    payer, auth = await _payer(env, "payer@example.com")
    async with api_client(env) as c:
        # Part paid first: the reservation itself is refused.
        inv = (await create(c, shop, "part", amount="20000", currency="SATS")).json()
        env.chain.pay(inv["payment_methods"]["onchain"]["address"], 4_000)
        await env.runtime.watcher.step()
        await refresh_open_invoices(env.sessions, env.settings, None)  # before the follow-up
        r = await _pay_from(c, payer, auth, "part",
                            inv["payment_methods"]["lightning"]["bolt11"])
        assert r.status_code == 422 and "asks for less now" in r.text, r.text
        # Held first, then paid in full on-chain: the release is refused, nothing moves.
        whole = (await create(c, shop, "whole", amount="20000", currency="SATS")).json()
        r = await _pay_from(c, payer, auth, "whole",
                            whole["payment_methods"]["lightning"]["bolt11"])
        assert r.status_code == 201 and r.json()["status"] == "review", r.text
        env.chain.pay(whole["payment_methods"]["onchain"]["address"], 20_000)
        await settle_all(env)
        case = await _case_of(env, r.json()["id"])
        assert (await c.post(f"/api/v1/admin/risk/cases/{case}/investigate", headers=admin,
                             json={})).status_code == 200
        closed = await c.post(f"/api/v1/admin/risk/cases/{case}/close", headers=admin,
                              json={"resolution": "false_positive", "money": "release"})
        assert closed.status_code == 422 and "asks for less now" in closed.text, closed.text
        env.chain.mine(1)
        await settle_all(env)
        got = (await c.get(f"/api/v1/invoices/{whole['id']}", headers=shop["read"])).json()
        assert got["paid_msat"] == 20_000 * SAT, got
        back = await c.post(f"/api/v1/admin/risk/cases/{case}/close", headers=admin,
                            json={"resolution": "false_positive", "money": "return"})
        assert back.status_code == 200, back.text
        w = (await c.get(f"/api/v1/wallets/{payer.id}", headers=auth)).json()
        assert w["held_msat"] == 0
    await env.check()


async def test_a_held_payment_is_released_though_its_store_invoice_expired_meanwhile(
        lnenv: LnEnv, shop):  # noqa: F811
    """Found from outside (stop 42, against the check above): a payment made in time and held
    for review could not be released once its store invoice expired while the case was open
    (15 minutes by default): the merchant lost the sale. Its release is refused only for
    what the invoice no longer asks for; an expired one is paid late."""
    from datetime import timedelta

    from sqlalchemy import update

    from satvault.db import utcnow
    from satvault.invoices.models import StoreInvoice
    from satvault.invoices.tasks import refresh_open_invoices
    from tests.lightning.test_refused_internal import _pay, _row, _store_invoice

    env = lnenv
    _, admin = await keys(env)
    await _review_big_payments(env)
    await fund(env, env.wallet, FUNDS)
    auth = await _payers_key(env)
    async with api_client(env) as c:
        bill = await _store_invoice(c, shop, "inv", 20_000)
        held = await _pay(c, env, auth, "held", bill["bolt11"])
        assert held.status_code == 201 and held.json()["status"] == "review", held.text
        async with env.sessions() as s, s.begin():  # the case takes longer than the invoice
            await s.execute(update(StoreInvoice).where(StoreInvoice.id == bill["id"]).values(
                expires_at=utcnow() - timedelta(minutes=1)))
        await refresh_open_invoices(env.sessions, env.settings, None)
        case = await _case_of(env, held.json()["id"])
        assert (await c.post(f"/api/v1/admin/risk/cases/{case}/investigate", headers=admin,
                             json={})).status_code == 200
        closed = await c.post(f"/api/v1/admin/risk/cases/{case}/close", headers=admin,
                              json={"resolution": "false_positive", "money": "release"})
        assert closed.status_code == 200, closed.text
        assert (await _row(env, bill["bolt11"])).status == LnInvoiceStatus.PAID
    await env.check()
