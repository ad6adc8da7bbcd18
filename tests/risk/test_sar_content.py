"""What a SAR draft says (found from outside, stop 38): a deposit case was worded as a payment
out of the wallet to our own receiving address; the "30 days before the payment" ran to a day
after the decision and summed every withdrawal, cancelled ones included; and a case of a
person's rule listed only the screened wallet's transactions though the rule counted the
person's wallets together."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from satvault.accounts.models import Wallet
from satvault.payouts.models import WithdrawalStatus
from satvault.risk import cases, sar
from satvault.risk.models import RiskCase, RiskDecision
from satvault.withdrawals.review import HeldWithdrawals
from satvault.withdrawals.service import PreparedDestination, withdraw
from tests.chainenv import Env
from tests.factories import merchant_wallet
from tests.lightning.test_lightning import fund
from tests.risk.test_case_races import held_withdrawals
from tests.risk.test_deposits import sanctioned_deposit_credited, senders_of
from tests.risk.test_withdrawals import DEST

SAT = 1000


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"withdrawal_daily_limit_msat": 10**15}


async def held_out(env: Env, wallet: Wallet, sat: int) -> str:
    """A withdrawal of ``sat`` from ``wallet`` (held for review by ``held_withdrawals``'
    rule): its id."""
    async def wallet_for(_s):
        return wallet
    async with env.sessions() as s, s.begin():
        wd = await withdraw(s, settings=env.settings, lightning=None, wallet_for=wallet_for,
                            prepared=PreparedDestination("onchain", DEST, None, sat * SAT))
    assert wd.status == WithdrawalStatus.REVIEW
    return wd.id


async def test_a_deposit_case_sar_tells_a_deposit_and_the_persons_month_before_it(env: Env):
    (kept, _), (returned, returned_case) = await held_withdrawals(env, 2)  # 10,000 sat each
    async with env.sessions() as s, s.begin():  # the second one is given back: cancelled
        await cases.close_case(s, case_id=returned_case, resolution="confirmed_risk",
                               money="return", actor="user:ann",
                               held=HeldWithdrawals(env.settings))
    async with env.sessions() as s, s.begin():  # the owner's shop: the same person
        _, shop = await merchant_wallet(s, env.wallet.owner_id)
    await fund(env, shop, 100_000 * SAT)
    from_shop = await held_out(env, shop, 7_000)

    txid = await sanctioned_deposit_credited(env, 50_000)
    sender = (await senders_of(env, txid))[0]
    after = await held_out(env, env.wallet, 3_000)  # after the decision: not its history
    async with env.sessions() as s:
        case_id = (await s.execute(select(RiskCase.id).join(
            RiskDecision, RiskDecision.id == RiskCase.decision_id).where(
            RiskDecision.subject_type == "deposit"))).scalar_one()
    async with env.sessions() as s, s.begin():
        draft = await sar.generate_sar(s, case_id=case_id, actor="user:ann")

    text = draft["narrative"]
    assert f"an on-chain deposit of 50,000 sat into wallet {env.wallet.id}" in text, text
    assert f"from {sender}" in text and "payment of" not in text, text
    assert "frozen" in text, text
    outs = {t["id"]: t for t in draft["transactions"]["out"]}
    assert set(outs) == {kept, returned, from_shop}, outs  # not the one after the decision
    assert outs[from_shop]["wallet_id"] == shop.id
    assert outs[returned]["status"] == "cancelled"
    assert draft["transactions"]["window"]["to"] <= draft["when"]["decided_at"]
    assert after not in outs
    # Sums of what left or is on its way: 10,000 + 7,000; the returned one named apart.
    assert "sent 2 withdrawal(s) totalling 17,000 sat" in text, text
    assert "1 more cancelled or failed" in text, text
    assert "2 wallets" in text, text


async def test_a_withdrawal_case_sar_leaves_the_withdrawal_itself_out_of_its_history(env: Env):
    [(first, _), (wid, case_id)] = await held_withdrawals(env, 2)
    async with env.sessions() as s, s.begin():
        draft = await sar.generate_sar(s, case_id=case_id, actor="user:ann")
    text = draft["narrative"]
    assert f"payment of 10,000 sat from wallet {env.wallet.id}" in text, text
    assert f"to {DEST}" in text and "held for review" in text, text
    assert [t["id"] for t in draft["transactions"]["out"]] == [first]
    assert wid not in {t["id"] for t in draft["transactions"]["out"]}
    assert "sent 1 withdrawal(s) totalling 10,000 sat" in text, text
    assert "cancelled or failed" not in text and "wallets" not in text, text
