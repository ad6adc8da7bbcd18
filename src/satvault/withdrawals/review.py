"""Moving a withdrawal the risk rules held for review, on its case's decision — the only
code that does (:func:`satvault.risk.cases.close_case` calls it through
:class:`HeldWithdrawals`; nothing else touches a withdrawal in ``review``).

``release``: it goes on exactly as one the rules had approved — on-chain it becomes
``pending`` for the payout job; over Lightning its payment row is queued for the payer
(:func:`~satvault.lightning.payments.release_held_payment`); an internal payment is settled
inside the ledger (:func:`~satvault.lightning.payments.settle_held_internally`). Then the
withdrawal policy decides, as it does for every approved withdrawal: allow, block (raises:
nothing moves, the case stays open) or hold it for approvers (``awaiting_approval``).

A wallet frozen while its withdrawal waited is refused a release (the money can be returned),
and so is one that would take the wallet past a withdrawal limit counting what it withdrew
before the release (:func:`~satvault.payouts.service.check_limits_at_release`: the case stays
open, to be closed with a release once the window has room, or with a return). Released, it
counts in the limits' windows from its release.

``return``: its hold is voided (the money is available to the customer again), the
withdrawal ``cancelled``; the reason is the case's. An internal payment's invoice, reserved
for it off the node since, is ``canceled``
(:func:`~satvault.withdrawals.refused.cancel_returned`); a store invoice's id is in the
effect (``store_invoice_id``) for the edge to issue its fresh BOLT11 after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.errors import NotFound
from satvault.kyc.errors import WalletFrozen
from satvault.lightning.invoices import StoreInvoiceHook
from satvault.lightning.payments import release_held_payment, settle_held_internally
from satvault.logs import get_logger
from satvault.payouts.events import emit_withdrawal
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.payouts.service import check_limits_at_release
from satvault.risk.errors import CaseRefused
from satvault.risk.models import RiskHeldInvoice
from satvault.withdrawals.cancel import void_and_cancel
from satvault.withdrawals.policy.approvals import apply_decision
from satvault.withdrawals.policy.service import decide_for, initiator_of
from satvault.withdrawals.refused import cancel_returned

__all__ = ["HeldWithdrawals"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HeldWithdrawals:
    """The withdrawal half of a case's money decision (see the module docstring)."""

    settings: Settings
    on_store_invoice: StoreInvoiceHook | None = None

    async def _held(self, session: AsyncSession, withdrawal_id: str) -> Withdrawal:
        wd = await session.get(Withdrawal, withdrawal_id, with_for_update=True,
                               populate_existing=True)
        if wd is None:
            raise NotFound(f"withdrawal {withdrawal_id!r} not found")
        if wd.status != WithdrawalStatus.REVIEW:
            raise CaseRefused(f"withdrawal {withdrawal_id} is {wd.status.value}, not held "
                              "for review")
        return wd

    async def release(self, session: AsyncSession, *, withdrawal_id: str,
                      actor: str) -> dict[str, Any]:
        wd = await self._held(session, withdrawal_id)
        wallet = await session.get(Wallet, wd.wallet_id)
        assert wallet is not None  # a foreign key
        if wallet.frozen_at is not None:  # frozen while it waited: nothing leaves it
            raise WalletFrozen(wallet.id, wallet.frozen_reason or "frozen by an operator")
        # It leaves now: it must fit the limits beside what left in the windows before.
        await check_limits_at_release(session, wd, wallet=wallet, settings=self.settings)
        bolt11: str | None = None
        if wd.method == WithdrawalMethod.ONCHAIN:
            wd.status, wd.updated_at = WithdrawalStatus.PENDING, utcnow()
            await session.flush()
        else:
            bolt11 = (await session.execute(select(RiskHeldInvoice.bolt11).where(
                RiskHeldInvoice.withdrawal_id == wd.id))).scalar_one_or_none() \
                or wd.destination
            if wd.method == WithdrawalMethod.INTERNAL:
                await settle_held_internally(session, wd, wallet=wallet, bolt11=bolt11,
                                             settings=self.settings,
                                             on_store_invoice=self.on_store_invoice)
            else:
                await release_held_payment(session, wd, bolt11=bolt11, settings=self.settings)
        # The withdrawal policy, as for every approved withdrawal once its money is held.
        version, decision = await decide_for(
            session, wd, wallet=wallet,
            bolt11=None if wd.method == WithdrawalMethod.INTERNAL else bolt11,
            settings=self.settings)
        # Who asked, kept when it was held; the wallet's owner for one held before that was
        # kept (migration 0074) or asked for by nobody in particular.
        initiator = wd.initiator or await initiator_of(
            session, owner_type=wallet.owner_type, owner_id=wallet.owner_id)
        await apply_decision(session, wd, decision=decision, version=version,
                             initiator=initiator, settings=self.settings)
        if wd.status == WithdrawalStatus.PENDING:  # to its payer (an internal one is paid)
            await emit_withdrawal(session, wd, "approved")
        log.info("held_withdrawal_released", withdrawal=wd.id, status=wd.status.value,
                 actor=actor)
        return _effect(wd, "release")

    async def give_back(self, session: AsyncSession, *, withdrawal_id: str, actor: str,
                        reason: str) -> dict[str, Any]:
        wd = await self._held(session, withdrawal_id)
        await void_and_cancel(session, wd, why=f"returned: {reason}",
                              code="withdrawal_returned")
        effect = {**_effect(wd, "return"), "reason": reason}
        if wd.method == WithdrawalMethod.INTERNAL:  # its invoice left the node when held
            bolt11 = (await session.execute(select(RiskHeldInvoice.bolt11).where(
                RiskHeldInvoice.withdrawal_id == wd.id))).scalar_one_or_none() \
                or wd.destination
            store_invoice_id = await cancel_returned(session, wd, bolt11=bolt11)
            if store_invoice_id is not None:  # for its fresh BOLT11, after the commit
                effect["store_invoice_id"] = store_invoice_id
        log.info("held_withdrawal_returned", withdrawal=wd.id, actor=actor, reason=reason)
        return effect


def _effect(wd: Withdrawal, action: str) -> dict[str, Any]:
    return {"action": action, "withdrawal_id": wd.id, "method": wd.method.value,
            "status": wd.status.value, "amount_msat": wd.amount_msat,
            "fee_reserve_msat": wd.fee_reserve_msat}
