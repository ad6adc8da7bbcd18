"""The rules engine on the withdrawal path, through the HTTP API: a sanctioned destination is
refused on every rail with a problem naming the decision, which the admin API explains; a
review holds the money in status ``review`` where neither the payout job nor the Lightning
payer takes it; every decision is stored and re-evaluates to the same answer."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.ledger.models import LedgerTransfer
from satvault.lightning.bolt11check import check_invoice
from satvault.lightning.invoices import create_invoice
from satvault.lightning.models import LnPayment
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.risk import service as risk
from satvault.risk.lists import refresh_sanctions
from satvault.risk.models import CaseStatus, RiskCase, RiskDecision
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import paid_lightning_invoice, refunder_key, shop  # noqa: F401
from tests.lightning.test_lightning import fund
from tests.payouts.test_payouts import fund as chain_fund
from tests.risk.conftest import default_doc

SAT = 1000
DEST = "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383"
REFUND_TO = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


async def keys(env: LnEnv) -> tuple[dict[str, str], dict[str, str]]:
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
        _, admin_token = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
    return {"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {admin_token}"}


async def make_live(env: LnEnv, doc: dict) -> None:
    async with env.sessions() as s, s.begin():
        rs = await risk.propose_rule_set(s, rules=doc, actor="user:a")
        await risk.approve_rule_set(s, version=rs.version, actor="user:b")


async def test_a_sanctioned_destination_is_refused_on_every_rail(lnenv: LnEnv, shop):  # noqa: F811
    env = lnenv
    auth, admin = await keys(env)
    await fund(env, env.wallet, 1_000_000 * SAT)
    carol = await env.wallet_for("carol@example.com")
    async with env.sessions() as s, s.begin():
        own = await create_invoice(s, backend=env.runtime.lightning, wallet=carol,
                                   amount_msat=1_000 * SAT)
    outside = env.network.create_invoice("customer2", 2_000 * SAT).bolt11
    payee = check_invoice(outside, network="regtest").payee  # the payee node's key
    async with env.sessions() as s, s.begin():
        await refresh_sanctions(s, actor="user:admin", text="\n".join(
            [DEST, payee, f"wallet:{carol.id}", REFUND_TO]))
    refunder = await refunder_key(env, shop)
    url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "paid", sats=30_000)
        answers = {
            "onchain": await c.post(url, headers={**auth, "Idempotency-Key": "a"},
                                    json={"destination": DEST, "amount_msat": 10_000 * SAT}),
            "lightning": await c.post(url, headers={**auth, "Idempotency-Key": "b"},
                                      json={"destination": outside}),
            "internal": await c.post(url, headers={**auth, "Idempotency-Key": "c"},
                                     json={"destination": own.bolt11}),
            "refund": await c.post(f"/api/v1/invoices/{inv['id']}/refunds",
                                   headers={**refunder, "Idempotency-Key": "d"},
                                   json={"destination": REFUND_TO,
                                         "amount_msat": 10_000 * SAT}),
        }
        explained = {}
        for rail, r in answers.items():
            assert r.status_code == 403, (rail, r.text)
            body = r.json()
            assert body["type"].endswith("/risk-rejected") and body["decision_id"] in \
                body["detail"], body
            e = await c.get(f"/api/v1/admin/risk/decisions/{body['decision_id']}",
                            headers=admin)
            assert e.status_code == 200, e.text
            explained[rail] = e.json()
        # The same key again: the stored refusal, not a second decision.
        again = await c.post(url, headers={**auth, "Idempotency-Key": "a"},
                             json={"destination": DEST, "amount_msat": 10_000 * SAT})
        assert again.json()["decision_id"] == answers["onchain"].json()["decision_id"]
        assert (await c.get(f"/api/v1/admin/risk/decisions/{body['decision_id']}",
                            headers=auth)).status_code == 403  # admins only
    for rail, e in explained.items():
        assert e["outcome"] == "reject" and e["sanctioned"] is True, e
        assert e["features"]["rail"] == rail
        assert e["case"]["status"] == "pending" and e["case"]["reason"] == "sanctioned address"
        [hit] = [r for r in e["rules"] if r["id"] == "sanctioned_address"]
        assert hit["matched"] and hit["inputs"] == {"destination_sanctioned": True}
    assert explained["lightning"]["features"]["counterparty"] == payee
    # A refund is its own rail, and pays by one: the shipped rule about new on-chain
    # addresses reads that one (found from outside: it scored Lightning refunds too).
    assert {rail: e["features"]["payout_rail"] for rail, e in explained.items()} == {
        "onchain": "onchain", "lightning": "lightning", "internal": "internal",
        "refund": "onchain"}
    new_address = {rail: [r["matched"] for r in e["rules"] if r["id"] == "new_onchain_address"]
                   for rail, e in explained.items()}
    assert new_address == {"onchain": [True], "lightning": [False], "internal": [False],
                           "refund": [True]}, new_address
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Withdrawal).where(
            Withdrawal.destination.in_((DEST, outside, own.bolt11, REFUND_TO))))
                ).scalar_one() == 0
        assert (await s.execute(select(func.count()).select_from(RiskCase))).scalar_one() == 4
    await env.check()


async def test_review_holds_the_money_and_nothing_pays_it(lnenv: LnEnv):
    env = lnenv
    auth, admin = await keys(env)
    doc = default_doc()
    doc["rules"].append({"id": "big", "score": 60, "when": {"all": [  # money out only:
        {"field": "direction", "op": "eq", "value": "out"},   # deposits are screened too
        {"field": "amount_msat", "op": "gte", "value": 50_000 * SAT}]}})
    await make_live(env, doc)
    await chain_fund(env, 1_000_000)  # a deposit, swept to the wallet that pays withdrawals
    outside = env.network.create_invoice("customer2", 60_000 * SAT).bolt11
    url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
    async with api_client(env) as c:
        small = await c.post(url, headers={**auth, "Idempotency-Key": "s"},
                             json={"destination": DEST, "amount_msat": 20_000 * SAT})
        chain = await c.post(url, headers={**auth, "Idempotency-Key": "o"},
                             json={"destination": DEST, "amount_msat": 70_000 * SAT})
        ln = await c.post(url, headers={**auth, "Idempotency-Key": "l"},
                          json={"destination": outside})
        async with env.sessions() as s:
            held_id = (await s.execute(select(RiskDecision.id).where(
                RiskDecision.subject_id == chain.json()["id"]))).scalar_one()
        why = (await c.get(f"/api/v1/admin/risk/decisions/{held_id}", headers=admin)).json()
    assert why["outcome"] == "review" and why["subject"]["id"] == chain.json()["id"]
    assert {r["id"] for r in why["rules"] if r["matched"]} >= {"big"}
    assert why["case"]["status"] == "pending" and why["thresholds"]["review"] == 50
    assert small.status_code == 201 and small.json()["status"] == "pending", small.text
    for r in (chain, ln):
        assert r.status_code == 201 and r.json()["status"] == "review", r.text
    await env.runtime.payouts.step()
    await env.runtime.payer.step()
    async with env.sessions() as s:
        held = {w.id: w for w in (await s.execute(select(Withdrawal))).scalars()}
        assert held[chain.json()["id"]].status == WithdrawalStatus.REVIEW
        assert held[chain.json()["id"]].batch_id is None
        assert held[ln.json()["id"]].status == WithdrawalStatus.REVIEW
        paid = held[small.json()["id"]]
        assert paid.status == WithdrawalStatus.BROADCAST and paid.batch_id  # the job ran
        assert (await s.execute(select(func.count()).select_from(LnPayment))).scalar_one() == 0
        for wid in (chain.json()["id"], ln.json()["id"]):  # each hold placed, not resolved
            w = held[wid]
            hold = (await s.execute(select(LedgerTransfer).where(
                LedgerTransfer.id == w.hold_id))).scalar_one()
            assert (hold.kind, int(hold.amount)) == ("pending", w.amount_msat + w.fee_reserve_msat)
            assert (await s.execute(select(LedgerTransfer.id).where(
                LedgerTransfer.pending_id == w.hold_id))).first() is None
        cases = (await s.execute(select(RiskCase).order_by(RiskCase.created_at))).scalars().all()
        assert [c.status for c in cases] == [CaseStatus.PENDING] * 2
        decisions = (await s.execute(select(RiskDecision).where(  # the deposit's aside
            RiskDecision.subject_type == "withdrawal"))).scalars().all()
    assert sorted(d.outcome for d in decisions) == ["approve", "review", "review"]
    assert {d.subject_id for d in decisions} == set(held)
    # Determinism: each stored decision, re-evaluated against its own version, again.
    async with env.sessions() as s:
        for d in decisions:
            v = await risk.reevaluate(s, d.id)
            assert (v.outcome.value, v.score) == (d.outcome, d.score)
            assert [r.as_dict() for r in v.results] == json.loads(d.results)
    await env.check()


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"rate_limit_create": "10000/second", "withdrawal_daily_limit_msat": 10**15}


def big_goes_to_review() -> dict:
    """The shipped rules and one more: a payment out of 50,000 sat or more is reviewed."""
    doc = default_doc()
    doc["rules"].append({"id": "big", "score": 60, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "out"},
        {"field": "amount_msat", "op": "gte", "value": 50_000 * SAT}]}})
    return doc


async def test_an_invoice_being_paid_is_refused_not_held_for_review(lnenv: LnEnv):
    """Found from outside: six payments of one external invoice at once gave one payment, four
    refusals and one withdrawal held for review, its money held until an admin closed a case
    whose release could only be refused (the invoice was paid). A payment the rules would hold
    is refused like any other when the invoice is already being paid from here."""
    from tests.lightning.test_lightning import pay_out

    env = lnenv
    auth, _ = await keys(env)
    doc = big_goes_to_review()
    await fund(env, env.wallet, 500_000 * SAT)
    outside = env.network.create_invoice("customer2", 60_000 * SAT).bolt11
    first = await pay_out(env, outside)  # queued for the node (before the rule was live)
    assert first.status == WithdrawalStatus.PENDING
    await make_live(env, doc)
    before = await env.balances()
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**auth, "Idempotency-Key": "again"},
                         json={"destination": outside})
    assert r.status_code == 422 and "being paid" in r.text, r.text
    assert await env.balances() == before  # nothing more held
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Withdrawal).where(
            Withdrawal.status == WithdrawalStatus.REVIEW))).scalar_one() == 0
    await env.check()


async def test_the_payers_own_invoice_is_refused_not_held_for_review(lnenv: LnEnv):
    """Found from outside: with the rules scoring a payment "review", paying the payer's own
    invoice was held (amount and a fee reserve) and opened a case, where an approved one is
    refused: it would move nothing."""
    env = lnenv
    auth, _ = await keys(env)
    doc = default_doc()
    doc["rules"].append({"id": "all", "score": 60, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "out"}]}})
    await fund(env, env.wallet, 500_000 * SAT)
    await make_live(env, doc)
    async with env.sessions() as s, s.begin():
        mine = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                    amount_msat=20_000 * SAT)
    before = await env.balances()
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**auth, "Idempotency-Key": "mine"},
                         json={"destination": mine.bolt11})
    assert r.status_code == 422 and "own wallet" in r.text, r.text
    assert await env.balances() == before
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(RiskCase))).scalar_one() == 0
    await env.check()


async def test_an_invoice_held_for_review_is_not_paid_by_asking_again(lnenv: LnEnv):
    """Found from outside: while a payment of an external invoice waited for review, the same
    request with a new idempotency key was screened afresh, approved, and paid at once: the
    review was bypassed, the wallet held the amount twice, and the held one could only be
    returned. Now, while one is held, every other request for that invoice is refused (409),
    from any wallet; once its case decides, the invoice is free again."""
    env = lnenv
    auth, _ = await keys(env)
    doc = big_goes_to_review()
    await fund(env, env.wallet, 500_000 * SAT)
    outside = env.network.create_invoice("customer2", 60_000 * SAT).bolt11
    await make_live(env, doc)
    async with api_client(env) as c:
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**auth, "Idempotency-Key": "first"},
                         json={"destination": outside})
        assert r.status_code == 201 and r.json()["status"] == "review", r.text
        await make_live(env, default_doc())  # the same request would now be approved
        before = await env.balances()
        r = await c.post(f"/api/v1/wallets/{env.wallet.id}/withdrawals",
                         headers={**auth, "Idempotency-Key": "again"},
                         json={"destination": f"lightning:{outside.upper()}"})
        assert r.status_code == 409, r.text
        assert r.json()["type"].endswith("invoice-under-review")
    assert await env.balances() == before  # nothing more held
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Withdrawal))).scalar_one() == 1
    await env.check()


def test_migration_0075_fills_the_held_invoices_payment_hashes(tmp_path):
    """Migration 0075: a row already in ``risk_held_invoices`` gets its BOLT11's payment hash
    (so a held payment made before the upgrade still blocks a second one); a BOLT11 that
    cannot be read leaves it null rather than fail the upgrade."""
    import sqlite3

    from alembic import command

    from satvault.migrate import alembic_config, upgrade
    from tests.lightning.test_lightning import BOLT11_MAINNET

    path = tmp_path / "m.db"
    url = f"sqlite:///{path}"
    upgrade(url, "0074_withdrawal_initiator")
    at = "2026-12-01 00:00:00"
    with sqlite3.connect(path) as db:
        for wid, bolt11 in (("wd_real", BOLT11_MAINNET), ("wd_junk", "lnbcrtjunk")):
            db.execute("INSERT INTO withdrawals (id, wallet_id, method, destination, "
                       "amount_msat, fee_reserve_msat, status, hold_id, created_at, updated_at) "
                       "VALUES (?, 'wal_a', 'lightning', ?, 1000, 0, 'review', ?, ?, ?)",
                       (wid, bolt11, f"wd:{wid}:hold", at, at))
            db.execute("INSERT INTO risk_held_invoices (withdrawal_id, bolt11) VALUES (?, ?)",
                       (wid, bolt11))
    upgrade(url)
    with sqlite3.connect(path) as db:
        got = dict(db.execute("SELECT withdrawal_id, payment_hash FROM risk_held_invoices"))
    assert got == {"wd_real": "0001020304050607080900010203040506070809000102030405060708090102",
                   "wd_junk": None}
    command.downgrade(alembic_config(url), "0074_withdrawal_initiator")
    upgrade(url)


async def test_a_withdrawal_no_rail_could_pay_is_refused_before_the_rules_screen_it(
        lnenv: LnEnv):
    """Found from outside: a Lightning withdrawal above the per-payment limit (21 million
    BTC) got the risk rules' refusal, and a stored decision on the payer's record, instead
    of the limit's error; on-chain, an amount below the dust floor or above the
    per-withdrawal limit did the same. What no rail could pay is bad input: refused with its
    own error before the rules screen it, and nothing is stored."""
    env = lnenv
    auth, _admin = await keys(env)
    await fund(env, env.wallet, 1_000_000 * SAT)
    doc = default_doc()
    doc["rules"].append({"id": "every_payout", "score": 100, "when": {
        "field": "direction", "op": "eq", "value": "out"}})
    await make_live(env, doc)
    huge = env.network.create_invoice("customer2", env.settings.ln_max_payment_msat + 1).bolt11
    url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
    async with api_client(env) as c:
        cases = [({"destination": huge}, "payment-refused", "per-payment limit"),
                 ({"destination": DEST, "amount_msat": 100 * SAT}, "invalid-withdrawal",
                  "dust"),
                 ({"destination": DEST,
                   "amount_msat": (env.settings.withdrawal_max_sat + 1) * SAT},
                  "invalid-withdrawal", "per-withdrawal limit")]
        for i, (body, slug, words) in enumerate(cases):
            r = await c.post(url, headers={**auth, "Idempotency-Key": f"bad-{i}"}, json=body)
            assert r.status_code == 422 and r.json()["type"].endswith(slug), (body, r.text)
            assert words in r.json()["detail"], r.text
        # A payable one still meets the rules.
        r = await c.post(url, headers={**auth, "Idempotency-Key": "fine"},
                         json={"destination": DEST, "amount_msat": 10_000 * SAT})
        assert r.status_code == 403 and r.json()["type"].endswith("risk-rejected"), r.text
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(RiskDecision))
                ).scalar_one() == 1
        assert (await s.execute(select(func.count()).select_from(Withdrawal))
                ).scalar_one() == 0


async def test_a_lightning_refund_is_no_new_onchain_address(lnenv: LnEnv, shop):  # noqa: F811
    """Found from outside (stop 38): the shipped rule ``new_onchain_address`` matched the
    ``refund`` rail whatever paid it, so every Lightning refund scored as a payment to a fresh
    on-chain address. It reads ``payout_rail`` now."""
    env = lnenv
    refunder = await refunder_key(env, shop)
    outside = env.network.create_invoice("customer2", 5_000 * SAT).bolt11
    async with api_client(env) as c:
        inv = await paid_lightning_invoice(c, env, shop, "paid", sats=30_000)
        r = await c.post(f"/api/v1/invoices/{inv['id']}/refunds",
                         headers={**refunder, "Idempotency-Key": "ln"},
                         json={"destination": outside})
        assert r.status_code == 201, r.text
        wid = r.json()["id"]
    async with env.sessions() as s:
        d = (await s.execute(select(RiskDecision).where(
            RiskDecision.subject_id == wid))).scalar_one()
    features = json.loads(d.features)
    assert (features["rail"], features["payout_rail"]) == ("refund", "lightning")
    [rule] = [r for r in json.loads(d.results) if r["id"] == "new_onchain_address"]
    assert not rule["matched"], rule
    await env.check()
