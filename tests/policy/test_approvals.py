"""Maker-checker on on-chain withdrawals against simnet: N-of-M approvals (never the
initiator's), paid once approved, expiry and rejection releasing the hold, block rules
holding nothing, the allow-list's cool-down, policy changes needing a second admin, and
racing approvers producing exactly one release."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from satvault.accounts.models import AuditEvent
from satvault.events.catalog import WEBHOOK_EVENT_TYPES
from satvault.events.models import OutboxEvent
from satvault.kernel.clock import FakeClock
from satvault.payouts.models import PayoutBatch, Withdrawal, WithdrawalStatus
from satvault.withdrawals.policy import approvals, service
from satvault.withdrawals.policy.errors import (
    ApprovalClosed,
    NotAnApprover,
    WithdrawalBlocked,
)
from satvault.withdrawals.policy.models import ApprovalStatus, PolicyStatus
from tests.chainenv import Env
from tests.payouts.test_payouts import SAT, external_address, fund, received
from tests.policy.support import People, make_live, people, request

RESERVE = 5_000
TWO_OF_TREASURY = [{"name": "large", "action": "require_approval", "approvals": 2,
                    "group": "treasury", "min_amount_msat": 50_000 * SAT}]


async def status_of(env: Env, wid: str) -> WithdrawalStatus:
    async with env.sessions() as s:
        wd = await s.get(Withdrawal, wid)
        assert wd is not None
        return wd.status


async def approve(env: Env, wid: str, who: str) -> approvals.ApprovalOutcome:
    async with env.sessions() as s, s.begin():
        return await approvals.approve_withdrawal(s, withdrawal_id=wid, approver=who,
                                                  settings=env.settings)


async def test_two_approvals_needed_initiator_excluded_then_paid_on_chain(env: Env):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, TWO_OF_TREASURY)
    await fund(env, 500_000)
    dest = external_address(env, 1)
    small = await request(env.sessions, env.settings, env.wallet, external_address(env, 2),
                          10_000, initiator=alice)
    assert small.status == WithdrawalStatus.PENDING  # below the threshold: as before
    wd = await request(env.sessions, env.settings, env.wallet, dest, 100_000, initiator=alice)
    assert wd.status == WithdrawalStatus.AWAITING_APPROVAL
    # its money is held while it waits
    assert (await env.balances())["held"] == (110_000 + 2 * RESERVE) * SAT
    # the payout job batches the small one only
    report = await env.runtime.payouts.step()
    assert report.batched == 1
    assert await status_of(env, wd.id) == WithdrawalStatus.AWAITING_APPROVAL

    with pytest.raises(NotAnApprover, match="initiator"):
        await approve(env, wd.id, alice)
    first = await approve(env, wd.id, who.bob)
    assert (first.approvals, first.required, first.released) == (1, 2, False)
    with pytest.raises(ApprovalClosed, match="already"):  # one approver cannot do it alone
        await approve(env, wd.id, who.bob)
    with pytest.raises(NotAnApprover, match="not an approver"):
        await approve(env, wd.id, who.admin1)  # an admin outside the group neither
    assert await status_of(env, wd.id) == WithdrawalStatus.AWAITING_APPROVAL
    assert (await env.runtime.payouts.step()).batched == 0

    second = await approve(env, wd.id, who.carol)
    assert second.released and second.status == ApprovalStatus.APPROVED
    assert await status_of(env, wd.id) == WithdrawalStatus.PENDING
    with pytest.raises(ApprovalClosed):
        await approve(env, wd.id, who.dave)

    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).batched == 1
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    assert await status_of(env, wd.id) == WithdrawalStatus.CONFIRMED
    assert await received(env, dest) == 100_000
    async with env.sessions() as s:
        actions = (await s.execute(select(AuditEvent.actor, AuditEvent.action).where(
            AuditEvent.object == f"withdrawal:{wd.id}").order_by(AuditEvent.id))).all()
    assert [tuple(a) for a in actions] == [
        (alice, "withdrawal.approval_required"), (who.bob, "withdrawal.approved"),
        (who.carol, "withdrawal.approved")]
    await env.check()


async def test_a_wallet_frozen_while_its_withdrawals_wait_pays_nothing(env: Env):
    """Found from outside: a wallet frozen while its withdrawal waited for approvers was paid
    once they approved, and a withdrawal queued before the freeze was batched and sent.
    Approving one of a frozen wallet is refused (it keeps waiting, held), and the payout job
    leaves a frozen wallet's queued withdrawals alone until it is unfrozen."""
    from satvault.kyc import service as kyc
    from satvault.kyc.errors import WalletFrozen

    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, TWO_OF_TREASURY)
    await fund(env, 500_000)
    dest, queued_dest = external_address(env, 1), external_address(env, 2)
    wd = await request(env.sessions, env.settings, env.wallet, dest, 100_000, initiator=alice)
    queued = await request(env.sessions, env.settings, env.wallet, queued_dest, 10_000,
                           initiator=alice)
    assert (wd.status, queued.status) == (WithdrawalStatus.AWAITING_APPROVAL,
                                          WithdrawalStatus.PENDING)
    async with env.sessions() as s, s.begin():
        await kyc.freeze(s, wallet_id=env.wallet.id, reason="court order", actor=who.admin1)
    for approver in (who.bob, who.carol):
        with pytest.raises(WalletFrozen):
            await approve(env, wd.id, approver)
    assert (await env.runtime.payouts.step()).batched == 0
    assert await status_of(env, wd.id) == WithdrawalStatus.AWAITING_APPROVAL
    assert await status_of(env, queued.id) == WithdrawalStatus.PENDING
    assert (await env.balances())["held"] == (110_000 + 2 * RESERVE) * SAT
    # Unfrozen, the queued one leaves; the other is approved and leaves too.
    async with env.sessions() as s, s.begin():
        await kyc.unfreeze(s, wallet_id=env.wallet.id, reason="lifted", actor=who.admin1)
    await approve(env, wd.id, who.bob)
    assert (await approve(env, wd.id, who.carol)).released
    env.chain.mine(1)
    await env.runtime.watcher.step()
    assert (await env.runtime.payouts.step()).batched == 2
    env.chain.mine(1)
    await env.runtime.watcher.step()
    await env.runtime.payouts.step()
    assert (await received(env, dest), await received(env, queued_dest)) == (100_000, 10_000)
    await env.check()


async def test_unapproved_withdrawal_expires_and_its_hold_is_released(env: Env,
                                                                       clock: FakeClock):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, TWO_OF_TREASURY)
    await fund(env, 300_000)
    before = await env.balances()
    wd = await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                       100_000, initiator=alice)
    await approve(env, wd.id, who.bob)
    assert (await env.balances())["available"] == before["available"] - (100_000 + RESERVE) * SAT
    async with env.sessions() as s, s.begin():
        assert await approvals.expire_due(s) == 0  # not yet
    clock.advance(seconds=env.settings.withdrawal_approval_ttl_seconds + 1)
    with pytest.raises(ApprovalClosed, match="closed"):
        await approve(env, wd.id, who.carol)
    async with env.sessions() as s, s.begin():
        assert await approvals.expire_due(s) == 1
    assert await status_of(env, wd.id) == WithdrawalStatus.CANCELLED
    after = await env.balances()
    assert after == before  # every msat back, nothing held
    assert (await env.runtime.payouts.step()).batched == 0
    async with env.sessions() as s, s.begin():
        assert await approvals.expire_due(s) == 0  # once
    await env.check()


async def test_rejection_cancels_and_releases(env: Env):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, TWO_OF_TREASURY)
    await fund(env, 300_000)
    before = await env.balances()
    wd = await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                       100_000, initiator=alice)
    async with env.sessions() as s, s.begin():
        with pytest.raises(NotAnApprover):
            await approvals.reject_withdrawal(s, withdrawal_id=wd.id, approver=alice)
    async with env.sessions() as s, s.begin():
        out = await approvals.reject_withdrawal(s, withdrawal_id=wd.id, approver=who.dave,
                                                reason="unknown address")
    assert out.status == ApprovalStatus.REJECTED
    assert await status_of(env, wd.id) == WithdrawalStatus.CANCELLED
    assert await env.balances() == before
    await env.check()


async def test_block_rule_refuses_and_holds_nothing(env: Env):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, [
        {"name": "no big on-chain", "action": "block", "rails": ["onchain"],
         "min_amount_msat": 100_000 * SAT}])
    await fund(env, 300_000)
    before = await env.balances()
    with pytest.raises(WithdrawalBlocked, match="'no big on-chain'"):
        await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                      150_000, initiator=alice)
    assert await env.balances() == before
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Withdrawal))).scalar_one() == 0
    ok = await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                       99_000, initiator=alice)
    assert ok.status == WithdrawalStatus.PENDING


async def test_window_rule_counts_earlier_withdrawals(env: Env):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, [
        {"name": "busy day", "action": "require_approval", "approvals": 1,
         "group": "treasury", "window_hours": 24, "window_min_sum_msat": 150_000 * SAT}])
    await fund(env, 500_000)
    first = await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                          100_000, initiator=alice)
    second = await request(env.sessions, env.settings, env.wallet, external_address(env, 2),
                           60_000, initiator=alice)
    assert (first.status, second.status) == (WithdrawalStatus.PENDING,
                                             WithdrawalStatus.AWAITING_APPROVAL)


async def test_allowlist_entry_counts_only_after_its_cool_down(env: Env, clock: FakeClock):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, [
        {"name": "known destinations only", "action": "block",
         "destination": "not_allowlisted"}])
    await fund(env, 300_000)
    dest = external_address(env, 1)
    async with env.sessions() as s, s.begin():
        entry = await service.add_allowlist_entry(s, wallet=env.wallet, destination=dest,
                                                  label="cold storage", actor=alice,
                                                  settings=env.settings)
    assert entry.usable_after - entry.created_at == timedelta(hours=48)
    with pytest.raises(WithdrawalBlocked):
        await request(env.sessions, env.settings, env.wallet, dest, 10_000, initiator=alice)
    clock.advance(hours=47)
    with pytest.raises(WithdrawalBlocked):
        await request(env.sessions, env.settings, env.wallet, dest, 10_000, initiator=alice)
    clock.advance(hours=1, seconds=1)
    wd = await request(env.sessions, env.settings, env.wallet, dest, 10_000, initiator=alice)
    assert wd.status == WithdrawalStatus.PENDING
    with pytest.raises(WithdrawalBlocked):  # another address is still unknown
        await request(env.sessions, env.settings, env.wallet, external_address(env, 2),
                      10_000, initiator=alice)


async def test_policy_change_needs_a_second_admin(env: Env):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    v1 = await make_live(env.sessions, who, TWO_OF_TREASURY)
    async with env.sessions() as s, s.begin():
        v2 = await service.propose_policy(s, admin=who.admin2, raw={"rules": []})
    async with env.sessions() as s, s.begin():
        with pytest.raises(NotAnApprover, match="second admin"):
            await service.approve_policy(s, admin=who.admin2, version=v2.version)
    async with env.sessions() as s, s.begin():
        with pytest.raises(NotAnApprover, match="not an admin"):
            await service.approve_policy(s, admin=who.bob, version=v2.version)
        with pytest.raises(NotAnApprover, match="not an admin"):
            await service.propose_policy(s, admin=alice, raw={"rules": []})
    async with env.sessions() as s:
        live = await service.live_policy(s)
    assert live is not None and live[0] == v1 and live[1].rules  # unchanged
    async with env.sessions() as s, s.begin():
        await service.approve_policy(s, admin=who.admin1, version=v2.version)
    async with env.sessions() as s:
        versions = {p.version: p.status for p in await service.policy_versions(s)}
        live = await service.live_policy(s)
    assert versions == {v1: PolicyStatus.SUPERSEDED, v2.version: PolicyStatus.LIVE}
    assert live is not None and live[1].rules == ()
    async with env.sessions() as s, s.begin():
        with pytest.raises(Exception, match="not proposed"):
            await service.approve_policy(s, admin=who.admin2, version=v1)


@pytest.mark.parametrize("required, racers", [(1, 2), (2, 3)])
async def test_racing_approvers_release_exactly_once(env: Env, required: int, racers: int):
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, [dict(TWO_OF_TREASURY[0], approvals=required)])
    await fund(env, 300_000)
    wd = await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                       100_000, initiator=alice)

    async def one(approver: str) -> approvals.ApprovalOutcome | Exception:
        try:
            return await approve(env, wd.id, approver)
        except ApprovalClosed as exc:
            return exc

    results = await asyncio.gather(*(one(a) for a in (who.bob, who.carol, who.dave)[:racers]))
    released = [r for r in results if isinstance(r, approvals.ApprovalOutcome) and r.released]
    assert len(released) == 1
    assert sum(isinstance(r, ApprovalClosed) for r in results) == racers - required
    assert await status_of(env, wd.id) == WithdrawalStatus.PENDING
    report = await env.runtime.payouts.step()
    assert report.batched == 1
    async with env.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(PayoutBatch).where(
            PayoutBatch.kind == "payout"))).scalar_one() == 1


async def _events_of(env: Env, wid: str) -> list[tuple[str, str]]:
    async with env.sessions() as s:
        rows = (await s.execute(select(OutboxEvent.type, OutboxEvent.payload).where(
            OutboxEvent.subject_type == "withdrawal", OutboxEvent.subject_id == wid)
            .order_by(OutboxEvent.id))).all()
    return [(t, json.loads(p)["status"]) for t, p in rows]


async def test_the_merchant_is_told_when_a_withdrawal_waits_for_approvers_and_when_it_leaves(
        env: Env, clock: FakeClock):
    """Known gap until stop 34: ``withdrawal.created`` is written before the policy decides,
    so it said ``pending`` for a withdrawal that then waited for approvers, and nothing told
    the merchant's webhooks that it waited, nor when the approvers released it."""
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    await make_live(env.sessions, who, TWO_OF_TREASURY)
    await fund(env, 500_000)
    small = await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                          10_000, initiator=alice)
    assert await _events_of(env, small.id) == [("withdrawal.created", "pending")]
    wd = await request(env.sessions, env.settings, env.wallet, external_address(env, 2),
                       100_000, initiator=alice)
    waits = [("withdrawal.created", "pending"),
             ("withdrawal.awaiting_approval", "awaiting_approval")]
    assert await _events_of(env, wd.id) == waits
    await approve(env, wd.id, who.bob)
    assert await _events_of(env, wd.id) == waits  # one of two: it still waits
    await approve(env, wd.id, who.carol)
    assert await _events_of(env, wd.id) == [*waits, ("withdrawal.approved", "pending")]
    # The others end as before: a rejection or an expiry cancels it.
    other = await request(env.sessions, env.settings, env.wallet, external_address(env, 3),
                          100_000, initiator=alice)
    clock.advance(seconds=env.settings.withdrawal_approval_ttl_seconds + 1)
    async with env.sessions() as s, s.begin():
        assert await approvals.expire_due(s) == 1
    assert await _events_of(env, other.id) == [*waits, ("withdrawal.cancelled", "cancelled")]
    # Webhooks may ask for them by name.
    assert {"withdrawal.awaiting_approval", "withdrawal.approved"} <= WEBHOOK_EVENT_TYPES


async def test_the_initiator_of_a_withdrawal_held_for_review_never_approves_it(env: Env):
    """Found from outside: a withdrawal the risk rules held for review went to the withdrawal
    policy when its case released it, with the wallet's owner as its initiator; the admin who
    had asked for it (from a customer's wallet) then approved it themselves. Who asked is
    kept with the held withdrawal and excluded from its approvers."""
    from satvault.risk import cases
    from satvault.risk.models import RiskCase, RiskDecision
    from satvault.withdrawals.review import HeldWithdrawals
    from tests.risk.conftest import default_doc

    await fund(env, 500_000)
    who = await people(env.sessions, initiator=env.wallet.owner_id)
    await make_live(env.sessions, who, TWO_OF_TREASURY)
    from satvault.risk import service as risk

    doc = default_doc()
    doc["rules"].append({"id": "big", "score": 60, "when": {"all": [
        {"field": "direction", "op": "eq", "value": "out"},
        {"field": "amount_msat", "op": "gte", "value": 50_000 * SAT}]}})
    async with env.sessions() as s, s.begin():
        rs = await risk.propose_rule_set(s, rules=doc, actor="user:a")
        await risk.approve_rule_set(s, version=rs.version, actor="user:b")
    # Bob, an approver, asks for a withdrawal from somebody else's wallet (as an admin may).
    wd = await request(env.sessions, env.settings, env.wallet, external_address(env, 3),
                       60_000, initiator=who.bob)
    assert wd.status == WithdrawalStatus.REVIEW
    async with env.sessions() as s, s.begin():
        case_id = (await s.execute(select(RiskCase.id).join(
            RiskDecision, RiskDecision.id == RiskCase.decision_id).where(
            RiskDecision.subject_id == wd.id))).scalar_one()
        await cases.investigate(s, case_id=case_id, actor=f"user:{who.admin1}")
        await cases.close_case(s, case_id=case_id, resolution="false_positive",
                               money="release", actor=f"user:{who.admin1}",
                               held=HeldWithdrawals(env.settings))
    assert await status_of(env, wd.id) == WithdrawalStatus.AWAITING_APPROVAL
    with pytest.raises(NotAnApprover, match="initiator"):
        await approve(env, wd.id, who.bob)
    await approve(env, wd.id, who.carol)
    assert (await approve(env, wd.id, who.dave)).released
    await env.check()


async def held_for_two(env: Env) -> tuple[People, Withdrawal]:
    """Approvers, a live two-of-treasury policy, and alice's 100,000 sat withdrawal it holds."""
    who = await people(env.sessions, initiator=env.wallet.owner_id)
    await make_live(env.sessions, who, TWO_OF_TREASURY)
    await fund(env, 500_000)
    wd = await request(env.sessions, env.settings, env.wallet, external_address(env, 1),
                       100_000, initiator=env.wallet.owner_id)
    assert wd.status == WithdrawalStatus.AWAITING_APPROVAL
    return who, wd


async def test_someone_who_approves_for_no_group_learns_nothing_of_which_ids_wait(env: Env):
    """Found from outside (read in the code): the request was looked up before the caller's
    membership, so someone with ``withdrawals:write`` who approves for no group got "not
    awaiting approval" for an unknown id and "not an approver" for one that waits: a way to
    tell which ids wait for approvers. Who approves for no group is refused first, alike."""
    who, wd = await held_for_two(env)
    for wid in (wd.id, "wd_doesnotexist0000000000"):
        for act in (approve, reject_as):
            with pytest.raises(NotAnApprover, match="not an approver of any group"):
                await act(env, wid, who.admin1)
    assert await status_of(env, wd.id) == WithdrawalStatus.AWAITING_APPROVAL
    # An approver of some group still hears that an unknown id waits for nobody.
    with pytest.raises(approvals.NotFound):
        await approve(env, "wd_doesnotexist0000000000", who.bob)
    await env.check()


async def reject_as(env: Env, wid: str, who: str) -> approvals.ApprovalOutcome:
    async with env.sessions() as s, s.begin():
        return await approvals.reject_withdrawal(s, withdrawal_id=wid, approver=who)


async def test_an_approval_counts_only_while_its_approver_is_in_the_group(env: Env):
    """Found from outside: bob approved a 2-of-K withdrawal, was then removed from the group
    (by two admins: his key was suspect, say), and carol's approval alone released it. An
    approval counts while its approver is a member of the withdrawal's group: carol's is
    the first again, and dave's the second."""
    who, wd = await held_for_two(env)
    assert (await approve(env, wd.id, who.bob)).approvals == 1
    async with env.sessions() as s, s.begin():
        change = await service.propose_group_change(s, admin=who.admin1, group="treasury",
                                                    user_id=who.bob, action="remove")
        await service.approve_group_change(s, admin=who.admin2, change_id=change.id)
    second = await approve(env, wd.id, who.carol)
    assert (second.approvals, second.required, second.released) == (1, 2, False)
    assert await status_of(env, wd.id) == WithdrawalStatus.AWAITING_APPROVAL
    third = await approve(env, wd.id, who.dave)
    assert third.released and await status_of(env, wd.id) == WithdrawalStatus.PENDING
    await env.check()


async def test_a_withdrawal_the_live_policy_now_blocks_is_not_released(env: Env):
    """Found from outside: with withdrawals held for approvers, two admins made live a policy
    blocking everything (an incident), and the approvers still released and paid the held
    ones. The release asks the live policy: what it now blocks stays held, and a rejection
    returns the money."""
    who, wd = await held_for_two(env)
    await approve(env, wd.id, who.bob)
    await make_live(env.sessions, who, [{"name": "stop", "action": "block"}])
    with pytest.raises(WithdrawalBlocked, match="stop"):
        await approve(env, wd.id, who.carol)
    assert await status_of(env, wd.id) == WithdrawalStatus.AWAITING_APPROVAL
    assert (await env.runtime.payouts.step()).batched == 0
    await reject_as(env, wd.id, who.carol)
    assert await status_of(env, wd.id) == WithdrawalStatus.CANCELLED
    assert (await env.balances())["held"] == 0
    await env.check()


async def test_a_proposal_older_than_the_live_version_cannot_be_approved(env: Env):
    """Found from outside: version 5 proposed, then version 6 proposed and made live; approving
    5 afterwards made it live and superseded 6, undoing the newer decision unseen. A proposal
    older than the live version is refused: propose it again."""
    alice = env.wallet.owner_id
    who = await people(env.sessions, initiator=alice)
    async with env.sessions() as s, s.begin():
        older = await service.propose_policy(s, admin=who.admin1, raw={"rules": [
            {"name": "stop", "action": "block", "rails": ["lightning"]}]})
        newer = await service.propose_policy(s, admin=who.admin1, raw={"rules": []})
    async with env.sessions() as s, s.begin():
        await service.approve_policy(s, admin=who.admin2, version=newer.version)
    async with env.sessions() as s, s.begin():
        with pytest.raises(Exception, match="propose it again"):
            await service.approve_policy(s, admin=who.admin2, version=older.version)
    async with env.sessions() as s:
        live = await service.live_policy(s)
    assert live is not None and live[0] == newer.version
