"""Deposits screened as they are credited, and the frozen money a case decides on.

:class:`RiskDepositScreen` is the :class:`satvault.accounts.frozen.DepositScreen` the
composition root gives the chain watcher and the Lightning listener. Each deposit, in the unit
of work that credits it:

* is screened (:func:`satvault.risk.service.screen`, direction ``in``; on-chain the addresses
  that paid are the counterparties, Lightning has none: amount, velocity and KYC rules only);
* its decision is stored (subject ``deposit``, the deposit's id);
* approve: credited as before; review or reject: a case is opened and the money is credited
  to the wallet's frozen sub-balance, with a ``risk_frozen_deposits`` row saying so.

A case then calls :func:`release_frozen_deposit` (frozen → the wallet's available balance) or
:func:`keep_frozen_deposit` (it stays frozen, counted as blocked). Both are idempotent, take
the row's lock, and write the audit log. A reorg that takes a frozen on-chain deposit away
reverses it from the frozen account (:meth:`RiskDepositScreen.unwind`), under the same lock,
so a release and a reversal never both move the same money.

Returning money to the sender is not done here: never to a sanctioned address; for others it
is a later step (an on-chain refund needs an address the sender controls, which the inputs do
not prove).
"""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.frozen import IncomingDeposit, ensure_frozen_account
from satvault.db import utcnow
from satvault.kernel.errors import NotFound
from satvault.kernel.ids import new_id
from satvault.ledger.core import TransferSpec
from satvault.ledger.errors import error_for
from satvault.ledger.store import create_transfers
from satvault.logs import get_logger
from satvault.risk.audit import audit
from satvault.risk.errors import FrozenDepositRefused
from satvault.risk.features import Event
from satvault.risk.models import FrozenStatus, RiskFrozenDeposit
from satvault.risk.rules import Outcome
from satvault.risk.service import record, screen

__all__ = ["RiskDepositScreen", "keep_frozen_deposit", "release_frozen_deposit"]

log = get_logger(__name__)
SUBJECT = "deposit"


def _event(d: IncomingDeposit) -> Event:
    return Event(wallet_id=d.wallet_id, ledger_account_id=d.ledger_account_id,
                 owner_type=d.owner_type, owner_id=d.owner_id, amount_msat=d.amount_msat,
                 direction="in", rail=d.rail, destination=d.receiving,
                 counterparty=d.senders[0] if d.senders else "", senders=d.senders)


class RiskDepositScreen:
    """The rules engine behind the deposit hook (see the module docstring)."""

    async def screen(self, session: AsyncSession, deposit: IncomingDeposit) -> int | None:
        s = await screen(session, _event(deposit))
        case_id = await record(session, s, subject_type=SUBJECT, subject_id=deposit.subject_id)
        if s.outcome == Outcome.APPROVE:
            return None
        frozen = await ensure_frozen_account(session, deposit.wallet_id)
        now = utcnow()
        await session.execute(insert(RiskFrozenDeposit).values(
            id=new_id("frz"), decision_id=s.decision_id, case_id=case_id,
            wallet_id=deposit.wallet_id, rail=deposit.rail, subject_id=deposit.subject_id,
            credit_id=deposit.credit_id, amount_msat=deposit.amount_msat - deposit.fee_msat,
            frozen_account_id=frozen, wallet_account_id=deposit.ledger_account_id,
            sanctioned=s.verdict.sanctioned, status=FrozenStatus.FROZEN,
            decided_by=None, created_at=now, updated_at=now))
        log.warning("deposit_frozen", wallet=deposit.wallet_id, rail=deposit.rail,
                    deposit=deposit.subject_id, msat=deposit.amount_msat,
                    decision=s.decision_id, case=case_id, outcome=s.outcome.value)
        return frozen

    async def unwind(self, session: AsyncSession, *, credit_id: str) -> int | None:
        row = (await session.execute(select(RiskFrozenDeposit).where(
            RiskFrozenDeposit.credit_id == credit_id).with_for_update())).scalar_one_or_none()
        if row is None or row.status == FrozenStatus.RELEASED:
            return None  # in the wallet's own account: the usual reversal takes it from there
        if row.status == FrozenStatus.REVERSED:
            return row.frozen_account_id  # asked again: the caller's transfer id is the guard
        before = row.status.value
        row.status, row.updated_at = FrozenStatus.REVERSED, utcnow()
        await audit(session, actor="satvault:watcher", action="risk.deposit.reverse",
                    subject=f"risk_frozen_deposit:{row.id}", before={"status": before},
                    after={"status": "reversed", "decision_id": row.decision_id})
        return row.frozen_account_id


async def _locked(session: AsyncSession, decision_id: str) -> RiskFrozenDeposit:
    row = (await session.execute(select(RiskFrozenDeposit).where(
        RiskFrozenDeposit.decision_id == decision_id).with_for_update())).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no frozen deposit for risk decision {decision_id!r}")
    return row


async def release_frozen_deposit(session: AsyncSession, *, decision_id: str,
                                 actor: str) -> None:
    """Move a frozen deposit to the wallet's available balance (a case cleared it).
    Idempotent; refused if a reorg reversed the deposit. Releasing one a case had kept
    (blocked) is allowed: a later decision overrules an earlier one, and both are audited."""
    row = await _locked(session, decision_id)
    if row.status == FrozenStatus.RELEASED:
        return
    if row.status == FrozenStatus.REVERSED:
        raise FrozenDepositRefused(f"the deposit of decision {decision_id} was reversed by a "
                                   "chain reorganisation: nothing is left to release")
    if row.amount_msat:
        outcome = (await create_transfers(session, [TransferSpec(
            f"{row.credit_id}:release", row.frozen_account_id, row.wallet_account_id,
            int(row.amount_msat), "BTC", code="deposit_release", ref=decision_id)]))[0]
        if not outcome.ok:
            raise error_for(outcome)
    before = row.status.value
    row.status, row.decided_by, row.updated_at = FrozenStatus.RELEASED, actor, utcnow()
    await session.flush()
    await audit(session, actor=actor, action="risk.deposit.release",
                subject=f"risk_frozen_deposit:{row.id}", before={"status": before},
                after={"status": "released", "decision_id": decision_id,
                       "amount_msat": int(row.amount_msat), "wallet_id": row.wallet_id})
    log.info("deposit_released", decision=decision_id, wallet=row.wallet_id, actor=actor)


async def keep_frozen_deposit(session: AsyncSession, *, decision_id: str, actor: str,
                              reason: str = "") -> None:
    """A case decided the deposit stays frozen: it is counted as blocked (the money stays in
    the frozen sub-balance, still owed and in the liabilities). Idempotent; refused once the
    money was released or reversed."""
    row = await _locked(session, decision_id)
    if row.status == FrozenStatus.BLOCKED:
        return
    if row.status != FrozenStatus.FROZEN:
        raise FrozenDepositRefused(f"the deposit of decision {decision_id} is "
                                   f"{row.status.value}, not frozen")
    row.status, row.decided_by, row.updated_at = FrozenStatus.BLOCKED, actor, utcnow()
    await session.flush()
    await audit(session, actor=actor, action="risk.deposit.block",
                subject=f"risk_frozen_deposit:{row.id}", before={"status": "frozen"},
                after={"status": "blocked", "decision_id": decision_id,
                       "reason": reason[:500]})
    log.info("deposit_blocked", decision=decision_id, wallet=row.wallet_id, actor=actor)
