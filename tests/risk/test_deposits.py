"""Deposit screening (issue 12 §1): every deposit is screened as it is credited; a held-back
one lands in the wallet's frozen sub-balance with a case, never lost, credited once, reversed
from the frozen account by a reorg, and released (or kept) by the case's decision."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.audit.models import AuditEvent
from satvault.custody.liabilities_service import liability_balances
from satvault.ledger.models import LedgerTransfer
from satvault.lightning.invoices import InvoiceListener, create_invoice
from satvault.lightning.models import LnInvoice
from satvault.onchain.addresses import script_to_address
from satvault.onchain.models import OnchainPayment
from satvault.risk import cases
from satvault.risk.errors import CaseRefused, FrozenDepositRefused
from satvault.risk.frozen import keep_frozen_deposit, release_frozen_deposit
from satvault.risk.lists import refresh_sanctions
from satvault.risk.models import FrozenStatus, RiskCase, RiskDecision, RiskFrozenDeposit
from tests.chainenv import Env, LnEnv, api_client
from tests.invoices.test_invoices import create, shop  # noqa: F401
from tests.onchain.test_watcher import deposit
from tests.risk.conftest import Ctx, default_doc

SAT = 1000


async def senders_of(env: Env, txid: str) -> list[str]:
    """The addresses the funding transaction spends from, as the node reports them."""
    status = await env.runtime.backend.transaction(txid)
    assert status is not None
    found = []
    for op in status.tx.inputs:
        prev = await env.runtime.backend.transaction(op.txid)
        assert prev is not None
        found.append(script_to_address(prev.tx.outputs[op.vout].script_pubkey, "regtest"))
    return found


async def sanction(env: Env, addresses: list[str]) -> None:
    async with env.sessions() as s, s.begin():
        await refresh_sanctions(s, text="\n".join(addresses), actor="user:admin",
                                source="test list")


async def api_balance(env: Env) -> dict:
    async with env.sessions() as s, s.begin():
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id,
                                            scopes=["wallet:read"])
    async with api_client(env) as c:
        r = await c.get(f"/api/v1/wallets/{env.wallet.id}",
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


async def decisions(env: Env) -> list[RiskDecision]:
    async with env.sessions() as s:
        return list((await s.execute(select(RiskDecision).where(
            RiskDecision.subject_type == "deposit").order_by(RiskDecision.at))).scalars())


async def frozen_rows(env: Env) -> list[RiskFrozenDeposit]:
    async with env.sessions() as s:
        return list((await s.execute(select(RiskFrozenDeposit))).scalars())


async def count_transfers(env: Env, prefix: str) -> int:
    async with env.sessions() as s:
        return (await s.execute(select(func.count()).select_from(LedgerTransfer).where(
            LedgerTransfer.id.like(f"{prefix}%")))).scalar_one()


async def sanctioned_deposit_credited(env: Env, sat: int) -> str:
    """An on-chain deposit of ``sat`` from a sanctioned address, mined and credited (to the
    frozen sub-balance); its txid."""
    d = await deposit(env, sat)
    txid = env.chain.pay(d.address, sat)
    await sanction(env, await senders_of(env, txid))
    await env.runtime.watcher.step()
    env.chain.mine(1)
    for _ in range(2):  # the credit, and a step that finds nothing more to do
        await env.runtime.watcher.step()
    return txid


async def test_onchain_deposit_from_a_sanctioned_address_lands_frozen_then_released(env: Env):
    d = await deposit(env, 50_000)
    txid = env.chain.pay(d.address, 50_000)
    await sanction(env, await senders_of(env, txid))
    await env.runtime.watcher.step()  # seen: the hold, as for any deposit
    assert (await env.balances())["incoming"] == 50_000 * SAT
    env.chain.mine(1)
    for _ in range(2):  # the credit, and a step that finds nothing more to do
        await env.runtime.watcher.step()
    assert await env.balances() == {"available": 0, "incoming": 0, "held": 0, "posted": 0}
    bal = await api_balance(env)
    assert bal["available_msat"] == 0 and bal["frozen_msat"] == 50_000 * SAT
    (dec,) = await decisions(env)
    async with env.sessions() as s:
        p = (await s.execute(select(OnchainPayment))).scalar_one()
        case = (await s.execute(select(RiskCase).where(
            RiskCase.decision_id == dec.id))).scalar_one()
    assert dec.outcome == "reject" and dec.sanctioned and dec.subject_id == f"{txid}:{p.vout}"
    assert p.credit_state == "credited" and case.reason == "sanctioned address"
    (row,) = await frozen_rows(env)
    assert row.status == FrozenStatus.FROZEN and row.case_id == case.id
    assert row.amount_msat == 50_000 * SAT and row.sanctioned
    async with env.sessions() as s:  # still owed: in the liabilities, under its wallet
        assert (await liability_balances(s))[env.wallet.id] == 50_000 * SAT
    await env.check()

    # Only the case's decision moves it: a deposit cannot be "returned" (refused, nothing
    # moves), a false positive releases it, and the same decision again moves nothing more.
    async with env.sessions() as s, s.begin():
        officer = await acc.create_user(s, email="officer@example.com", is_admin=True)
        await cases.investigate(s, case_id=case.id, actor=officer.id)
    with pytest.raises(CaseRefused, match=r"released to the wallet .* or kept frozen"):
        async with env.sessions() as s, s.begin():
            await cases.close_case(s, case_id=case.id, resolution="false_positive",
                                   money="return", actor=officer.id, held=None)
    for acted in (True, False):
        async with env.sessions() as s, s.begin():
            done = await cases.close_case(s, case_id=case.id, resolution="false_positive",
                                          actor=officer.id, held=None)
        assert done.acted is acted
    assert done.case["money"] == "release"
    async with env.sessions() as s, s.begin():  # the function itself is idempotent too
        await release_frozen_deposit(s, decision_id=dec.id, actor=officer.id)
    assert (await env.balances())["available"] == 50_000 * SAT
    bal = await api_balance(env)
    assert bal["available_msat"] == 50_000 * SAT and bal["frozen_msat"] == 0
    assert await count_transfers(env, "oc:in:") == 4  # hold, its void, frozen, release
    (row,) = await frozen_rows(env)
    assert row.status == FrozenStatus.RELEASED and row.decided_by == officer.id
    async with env.sessions() as s:
        actions = (await s.execute(select(AuditEvent.action).where(
            AuditEvent.action.like("risk.deposit.%")))).scalars().all()
    assert actions == ["risk.deposit.release"]
    await env.check()


async def test_approved_deposit_is_credited_as_before_and_decided_once(env: Env):
    d = await deposit(env, 30_000)
    env.chain.pay(d.address, 30_000)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    restarted = env.new_runtime()  # the same block seen again by a restarted watcher
    try:
        await restarted.watcher.step()
    finally:
        await restarted.close()
    await env.runtime.watcher.step()
    assert (await env.balances())["available"] == 30_000 * SAT
    (dec,) = await decisions(env)
    assert dec.outcome == "approve" and int(dec.amount_msat) == 30_000 * SAT
    assert await frozen_rows(env) == []
    assert (await api_balance(env))["frozen_msat"] == 0
    assert await count_transfers(env, "oc:in:") == 2  # hold and post, as before
    await env.check()


async def test_reorg_removing_a_frozen_deposit_reverses_it_from_the_frozen_account(env: Env):
    d = await deposit(env, 40_000)
    txid = env.chain.pay(d.address, 40_000)
    await sanction(env, await senders_of(env, txid))
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await api_balance(env))["frozen_msat"] == 40_000 * SAT
    env.chain.reorg(2, drop_txids=[txid])
    await env.runtime.watcher.step()
    await env.runtime.watcher.step()
    assert await env.balances() == {"available": 0, "incoming": 0, "held": 0, "posted": 0}
    assert (await api_balance(env))["frozen_msat"] == 0
    (row,) = await frozen_rows(env)
    assert row.status == FrozenStatus.REVERSED
    async with env.sessions() as s:
        p = (await s.execute(select(OnchainPayment))).scalar_one()
    assert p.status == "conflicted" and p.credit_state == "reversed"
    with pytest.raises(FrozenDepositRefused):
        async with env.sessions() as s, s.begin():
            await release_frozen_deposit(s, decision_id=row.decision_id, actor="user:officer")
    await env.check()


async def _lightning_rules(env: LnEnv) -> None:
    doc = default_doc()
    doc["rules"].append({"id": "big_deposit", "score": 60,
                         "when": {"all": [{"field": "direction", "op": "eq", "value": "in"},
                                          {"field": "amount_msat", "op": "gt",
                                           "value": 5_000 * SAT}]}})
    await Ctx(env.sessions, env.wallet).live(doc)


async def test_lightning_deposit_tripping_a_rule_lands_frozen_once(lnenv: LnEnv):
    env = lnenv
    await _lightning_rules(env)
    async with env.sessions() as s, s.begin():
        small = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                     amount_msat=2_000 * SAT)
        big = await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                   amount_msat=9_000 * SAT)
    listener = InvoiceListener(env.sessions, env.runtime.lightning, node="lnd",
                               deposit_screen=env.runtime.deposit_screen)
    for bill in (small, big):
        env.network.pay("customer1", bill.bolt11)
        assert await listener.handle(bill.payment_hash, bill.amount_msat, 0)
    assert not await listener.handle(big.payment_hash, 9_000 * SAT, 0)  # seen twice
    assert await listener.sweep() == 0  # and by the sweep: nothing more
    assert (await env.balances())["available"] == 2_000 * SAT
    assert (await api_balance(env))["frozen_msat"] == 9_000 * SAT
    outcomes = {d.subject_id: d.outcome for d in await decisions(env)}
    assert outcomes == {small.id: "approve", big.id: "review"}
    async with env.sessions() as s:
        paid = (await s.execute(select(LnInvoice.status).where(
            LnInvoice.id == big.id))).scalar_one()
    assert paid == "paid"  # paid as the node says; the money is what is held
    (row,) = await frozen_rows(env)
    assert row.rail == "lightning" and row.subject_id == big.id

    async with env.sessions() as s, s.begin():
        await keep_frozen_deposit(s, decision_id=row.decision_id, actor="user:officer",
                                  reason="source of funds unclear")
    async with env.sessions() as s, s.begin():  # idempotent
        await keep_frozen_deposit(s, decision_id=row.decision_id, actor="user:officer")
    (row,) = await frozen_rows(env)
    assert row.status == FrozenStatus.BLOCKED
    assert (await api_balance(env))["frozen_msat"] == 9_000 * SAT
    async with env.sessions() as s, s.begin():  # a later decision may still release it
        await release_frozen_deposit(s, decision_id=row.decision_id, actor="user:officer-2")
    with pytest.raises(FrozenDepositRefused):
        async with env.sessions() as s, s.begin():
            await keep_frozen_deposit(s, decision_id=row.decision_id, actor="user:officer")
    assert (await env.balances())["available"] == 11_000 * SAT
    assert await count_transfers(env, f"ln:in:{big.payment_hash}") == 2  # frozen, release
    await env.check()


async def test_a_wallet_without_a_frozen_deposit_cannot_release(lnenv: LnEnv):
    from satvault.kernel.errors import NotFound

    with pytest.raises(NotFound):
        async with lnenv.sessions() as s, s.begin():
            await release_frozen_deposit(s, decision_id="rd_nothing", actor="user:officer")


async def test_store_invoice_paid_by_a_sanctioned_sender_settles_with_the_money_frozen(
        lnenv: LnEnv, shop):  # noqa: F811
    env = lnenv
    async with api_client(env) as c:
        inv = (await create(c, shop, "frz", amount="50000", currency="SATS",
                            payment_methods=["onchain"])).json()
        txid = env.chain.pay(inv["payment_methods"]["onchain"]["address"], 50_000)
        await sanction(env, await senders_of(env, txid))
        env.chain.mine(1)
        await env.runtime.watcher.step()
        got = (await c.get(f"/api/v1/invoices/{inv['id']}", headers=shop["read"])).json()
    # The merchant sees the invoice paid, as the chain says; the money is held back.
    assert got["status"] == "settled" and got["paid_msat"] == 50_000 * SAT
    fee = 50_000 * SAT * env.settings.invoice_fee_bp // 10_000
    assert (await env.balances(shop["wallet"]))["available"] == 0
    (row,) = await frozen_rows(env)
    assert row.wallet_id == shop["wallet"].id and row.amount_msat == 50_000 * SAT - fee
    # First seen in its block: no hold made and voided, the frozen credit and the fee only.
    assert await count_transfers(env, "oc:in:") == 2
    await env.check()
    async with env.sessions() as s, s.begin():
        await release_frozen_deposit(s, decision_id=row.decision_id, actor="user:officer")
    assert (await env.balances(shop["wallet"]))["available"] == 50_000 * SAT - fee
    await env.check()


async def test_a_frozen_deposit_is_not_a_reconciliation_difference(env: Env):
    """Found from outside: a deposit the screen held back is credited to the wallet's frozen
    sub-balance (a transfer of its own, not the hold's posting), which reconciliation did
    not count: every frozen deposit was raised as a credit mismatch. The books agree with
    the record, so it reports nothing; reversed by a reorg, nothing either."""
    from satvault.reconcile.service import find_differences

    txid = await sanctioned_deposit_credited(env, 50_000)
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(LedgerTransfer).where(
            LedgerTransfer.code == "deposit_frozen"))).scalar_one() == 1
    diffs, _ = await find_differences(env.sessions, env.runtime.backend, None, deep=False)
    assert [x.as_dict() for x in diffs if x.way == "records"] == []
    env.chain.reorg(1, drop_txids=[txid])
    await env.runtime.watcher.step()
    diffs, _ = await find_differences(env.sessions, env.runtime.backend, None, deep=False)
    assert [x.as_dict() for x in diffs if x.way == "records"] == []
    await env.check()
