"""Case decisions under contention and at their edges, through the service: two admins
deciding one case at once (one releases, one returns) — exactly one acts and the money moves
once; a deposit case is refused with the place it will be decided; a case's history cannot be
rewritten; a held withdrawal moves by no other path (the approvers' queue does not know it),
and is not released from a wallet frozen meanwhile."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.db import utcnow
from satvault.kernel.errors import InvalidInput, NotFound
from satvault.kyc.errors import WalletFrozen
from satvault.ledger.models import LedgerTransfer
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.risk import cases
from satvault.risk.errors import CaseRefused
from satvault.risk.models import CaseStatus, RiskCase, RiskCaseEvent, RiskDecision
from satvault.withdrawals.policy.approvals import approve_withdrawal, reject_withdrawal
from satvault.withdrawals.policy.errors import NotAnApprover
from satvault.withdrawals.review import HeldWithdrawals
from satvault.withdrawals.service import PreparedDestination, withdraw
from tests.chainenv import Env
from tests.lightning.test_lightning import fund
from tests.risk.test_withdrawals import DEST, make_live

SAT = 1000


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"withdrawal_daily_limit_msat": 10**15}


async def held_withdrawals(env: Env, n: int, *, investigate: bool = True
                           ) -> list[tuple[str, str]]:
    """``n`` on-chain withdrawals the rules hold for review, each case being investigated
    (unless not ``investigate``): (withdrawal id, case id)."""
    await make_live(env, {"thresholds": {"review": 50, "reject": 100}, "rules": [
        {"id": "all_out", "score": 60, "when": {"field": "direction", "op": "eq",
                                                "value": "out"}}]})
    await fund(env, env.wallet, 10_000_000 * SAT)
    wallet = env.wallet

    async def wallet_for(_s):
        return wallet

    out = []
    for _ in range(n):
        async with env.sessions() as s, s.begin():
            wd = await withdraw(s, settings=env.settings, lightning=None, wallet_for=wallet_for,
                                prepared=PreparedDestination("onchain", DEST, None, 10_000 * SAT))
        assert wd.status == WithdrawalStatus.REVIEW
        async with env.sessions() as s, s.begin():
            case_id = (await s.execute(select(RiskCase.id).join(
                RiskDecision, RiskDecision.id == RiskCase.decision_id).where(
                RiskDecision.subject_id == wd.id))).scalar_one()
            if investigate:
                await cases.investigate(s, case_id=case_id, actor="user:ann")
        out.append((wd.id, case_id))
    return out


async def test_two_admins_deciding_at_once_one_acts(env: Env):
    rounds = await held_withdrawals(env, 3)
    held = HeldWithdrawals(env.settings)

    async def decide(case_id: str, money: str, who: str) -> str:
        try:
            async with env.sessions() as s, s.begin():
                r = await cases.close_case(
                    s, case_id=case_id, actor=who, held=held, money=money,
                    resolution="false_positive" if money == "release" else "confirmed_risk")
            return money if r.acted else "replayed"
        except CaseRefused:
            return "refused"

    for wid, case_id in rounds:
        results = await asyncio.gather(decide(case_id, "release", "user:ann"),
                                       decide(case_id, "return", "user:bob"))
        assert sorted(results) in (["refused", "release"], ["refused", "return"]), results
        winner = "release" if "release" in results else "return"
        async with env.sessions() as s:
            wd = await s.get(Withdrawal, wid)
            case = await s.get(RiskCase, case_id)
            resolving = (await s.execute(select(func.count()).select_from(LedgerTransfer)
                                         .where(LedgerTransfer.pending_id == wd.hold_id))
                         ).scalar_one()
            decisions = (await s.execute(select(func.count()).select_from(RiskCaseEvent).where(
                RiskCaseEvent.case_id == case_id, RiskCaseEvent.kind == "decision"))
            ).scalar_one()
        assert case.status == CaseStatus.CLOSED and case.money == winner and decisions == 1
        if winner == "release":
            assert wd.status == WithdrawalStatus.PENDING and resolving == 0
        else:
            assert wd.status == WithdrawalStatus.CANCELLED and resolving == 1
        # The loser's request again, now that it is decided: still refused; the winner's: a
        # replay that moves nothing.
        assert await decide(case_id, "return" if winner == "release" else "release",
                            "user:bob") == "refused"
        assert await decide(case_id, winner, "user:ann") == "replayed"
    await env.check()


async def test_deposit_cases_history_and_no_other_path(env: Env):
    [(wid, case_id)] = await held_withdrawals(env, 1)
    # A deposit's case whose money is not frozen here: refused, the case stays open.
    now = utcnow()
    async with env.sessions() as s, s.begin():
        decision = (await s.execute(select(RiskDecision).join(
            RiskCase, RiskCase.decision_id == RiskDecision.id).where(
            RiskCase.id == case_id))).scalar_one()
        await s.execute(insert(RiskDecision).values(
            id="rd_deposit", at=now, wallet_id=env.wallet.id, subject_type="deposit",
            subject_id="txid:0", rule_set_version=decision.rule_set_version,
            outcome="review", score=60, sanctioned=False, amount_msat=5_000 * SAT,
            features="{}", results="[]"))
        await s.execute(insert(RiskCase).values(
            id="case_deposit", decision_id="rd_deposit", wallet_id=env.wallet.id,
            status=CaseStatus.INVESTIGATING, reason="review", created_at=now, updated_at=now))
    with pytest.raises(CaseRefused, match="returning a deposit to its sender is not built"):
        async with env.sessions() as s, s.begin():
            await cases.close_case(s, case_id="case_deposit", resolution="confirmed_risk",
                                   money="return", actor="user:ann",
                                   held=HeldWithdrawals(env.settings))
    with pytest.raises(NotFound):
        async with env.sessions() as s, s.begin():
            await cases.close_case(s, case_id="case_deposit", resolution="false_positive",
                                   actor="user:ann", held=HeldWithdrawals(env.settings))
    async with env.sessions() as s:
        assert (await s.get(RiskCase, "case_deposit")).status == CaseStatus.INVESTIGATING

    # The approvers' queue cannot move a withdrawal held for review (an admin who approves
    # for no group is refused before it is looked up).
    async with env.sessions() as s, s.begin():
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
    for act in (partial(approve_withdrawal, settings=env.settings), reject_withdrawal):
        with pytest.raises((NotFound, NotAnApprover)):
            async with env.sessions() as s, s.begin():
                await act(s, withdrawal_id=wid, approver=admin.id)
    # A wallet frozen while its withdrawal waited: no release (the case stays open).
    async with env.sessions() as s, s.begin():
        await s.execute(update(Wallet).where(Wallet.id == env.wallet.id).values(
            frozen_at=utcnow(), frozen_reason="fraud report"))
    with pytest.raises(WalletFrozen):
        async with env.sessions() as s, s.begin():
            await cases.close_case(s, case_id=case_id, resolution="false_positive",
                                   actor="user:ann", held=HeldWithdrawals(env.settings))
    async with env.sessions() as s:
        assert (await s.get(RiskCase, case_id)).status == CaseStatus.INVESTIGATING
        assert (await s.get(Withdrawal, wid)).status == WithdrawalStatus.REVIEW
    # A withdrawal no longer in review is not moved by its case either.
    async with env.sessions() as s, s.begin():
        await s.execute(update(Withdrawal).where(Withdrawal.id == wid).values(
            status=WithdrawalStatus.CANCELLED))
        with pytest.raises(CaseRefused, match="not held for review"):
            await cases.close_case(s, case_id=case_id, resolution="false_positive",
                                   actor="user:ann", held=HeldWithdrawals(env.settings))
        await s.rollback()

    # The case's history is insert-only.
    async with env.sessions() as s, s.begin():
        await cases.add_note(s, case_id=case_id, text="first look", actor="user:ann")
    for stmt in ("UPDATE risk_case_events SET text = 'rewritten'",
                 "DELETE FROM risk_case_events"):
        with pytest.raises((DBAPIError, IntegrityError), match="insert-only"):
            async with env.sessions() as s, s.begin():
                await s.execute(text(stmt))
    async with env.sessions() as s:
        notes = (await s.execute(select(RiskCaseEvent.text).where(
            RiskCaseEvent.kind == "note"))).scalars().all()
    assert notes == ["first look"]
    # Bad input changes nothing.
    for bad in ({"uri": "nowhere", "sha256": "ab" * 32},
                {"uri": "s3://a", "sha256": "zz" * 32}):
        with pytest.raises(InvalidInput, match=r"uri|sha256"):
            async with env.sessions() as s, s.begin():
                await cases.attach(s, case_id=case_id, description="", actor="user:ann", **bad)
    with pytest.raises(NotFound):
        async with env.sessions() as s, s.begin():
            await cases.add_note(s, case_id="case_nope", text="x", actor="user:ann")


async def test_an_admin_never_decides_a_case_about_their_own_money(env: Env):
    """Found from outside: closing a case checked nothing about who closed it, so an admin
    whose own withdrawal the rules held could release it themselves. The wallet's owner is
    refused; another admin decides."""
    from satvault.risk.errors import DeciderIsSubject

    [(wid, case_id)] = await held_withdrawals(env, 1)
    held = HeldWithdrawals(env.settings)
    with pytest.raises(DeciderIsSubject):
        async with env.sessions() as s, s.begin():
            await cases.close_case(s, case_id=case_id, resolution="false_positive",
                                   actor=f"user:{env.wallet.owner_id}", held=held)
    async with env.sessions() as s, s.begin():
        await cases.close_case(s, case_id=case_id, resolution="false_positive",
                               actor="user:ann", held=held)
    async with env.sessions() as s:
        assert (await s.get(Withdrawal, wid)).status == WithdrawalStatus.PENDING
