"""The Reconciler raises a difference for a person once two runs have seen it. Deep-only
differences (a broken audit chain, the risk roll-ups drifting) are seen only by deep runs,
one in every ``deep_every``; the shallow runs between them resolved them, so a tampered
audit log was never raised (found from outside, stop 32). A run now leaves alone what it did
not look for: a deep-only kind on a shallow run, the world's kinds when the chain node could
not be asked, the Lightning node's when it could not."""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import select

from satvault.accounts import service as accounts
from satvault.audit import AuditEvent
from satvault.audit.service import seal_all
from satvault.onchain.models import ReviewItem
from satvault.reconcile import service as rec_service
from satvault.reconcile.checks import DEEP_ONLY_KINDS, LN_NODE_KINDS, Diff, unchecked
from satvault.reconcile.models import ReconciliationIncident
from satvault.reconcile.service import Reconciler
from tests.audit.test_chain import _bypassing_triggers, _dialect


class _Tip:
    def __init__(self) -> None:
        self.height = 100

    async def tip(self):
        self.height += 1  # a new block before every step
        return SimpleNamespace(height=self.height)


async def test_a_broken_audit_chain_is_raised_for_a_person(sessions, monkeypatch):
    async with sessions() as s, s.begin():
        user = await accounts.create_user(s, email="a@example.com")
        await accounts.create_api_key(s, owner_id=user.id, scopes=["wallet:read"])
    await seal_all(sessions)
    async with sessions() as s:
        victim = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "apikey.create"))).scalar_one()
    assert victim.seq is not None
    await _bypassing_triggers(
        sessions, _dialect(sessions),
        f"UPDATE audit_events SET state_after = '{{\"scopes\": [\"admin\"]}}' "
        f"WHERE id = {victim.id}", "audit_events")

    async def no_world(sessions, backend, lightning, now, cursor=None):  # the nodes agree
        return [], 101
    monkeypatch.setattr(rec_service, "world_way", no_world)

    reconciler = Reconciler(sessions, _Tip(), deep_every=3)
    raised = []
    for _ in range(9):  # three deep runs, each followed by two shallow ones
        raised += await reconciler.step()
    async with sessions() as s:
        incidents = (await s.execute(select(ReconciliationIncident).where(
            ReconciliationIncident.kind == "audit_chain_broken"))).scalars().all()
        items = (await s.execute(select(ReviewItem.subject).where(
            ReviewItem.kind == "reconciliation_difference"))).scalars().all()
    assert len(incidents) == 1 and incidents[0].resolved_at is None  # one, kept open
    assert incidents[0].seen_runs == 3  # by each deep run
    assert [d.kind for d in raised] == ["audit_chain_broken"], (raised, incidents)
    assert [i for i in items if i.startswith("audit_chain_broken:")] != []


def test_what_a_run_did_not_look_for():
    def diff(kind: str) -> Diff:
        return Diff("world", kind, "x", "")
    assert unchecked([], deep=True) == frozenset()
    assert unchecked([], deep=False) == DEEP_ONLY_KINDS
    assert unchecked([diff("ln_node_unreachable")], deep=True) == LN_NODE_KINDS
    assert unchecked([diff("chain_node_unreachable")], deep=True) is None
