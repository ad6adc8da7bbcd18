"""Resolving a ``stuck`` payout batch: a person decides, the chain must agree.

A payout batch is ``stuck`` (review item ``payout_stuck``) when the signer refused its first
version (``PaidBefore`` after a restore, say) or the node rejected it while one of its coins
was spent by a transaction we do not know. The payout job never moves such a batch again
(it advances only ``signing``, ``signed`` and ``broadcast`` batches). An admin resolves it
one of three ways, each refused (:class:`CannotResolveBatch`, nothing changed) unless the
node proves it safe:

* ``requeue``: the batch is ``abandoned`` and its withdrawals go back to ``pending`` with
  their holds (the payout job's own give-up, :func:`~satvault.payouts.settle.give_up`). Only
  if no version of it can confirm any more: none is known to the node, and one of its coins
  is spent by a confirmed transaction (so not by a version of it), or none was ever signed.
  Nor may any other transaction the signer signed paying its withdrawals and did not give
  up (the earlier payer a ``PaidBefore`` names, asked of the signer with ``payers``): each
  is refused if the node knows it (it pays the withdrawal, ``paid_by``, or may), and needs
  the same proof otherwise (unknown to the node, an input spent by a confirmed
  transaction). The versions and those earlier payers are given up at the signer first, so
  the next payout pass pays the withdrawals from other coins without anyone at the signer.
* ``return``: the same proof, then each withdrawal is cancelled and its hold voided through
  the one cancel path, :func:`~satvault.withdrawals.cancel.void_and_cancel`.
* ``paid_by`` TXID: TXID has ``payout_confirmations`` on the node and pays every withdrawal
  of the batch (a distinct output to its address of at least its amount), and no version of
  the batch is known to the node (none was ever accepted by one, or its coin is spent by a
  confirmed transaction). The holds are posted by the payout job's own booking
  (:func:`~satvault.payouts.settle.book_payout`) with TXID's fee share split over them as
  for a version of the batch; the batch is ``confirmed`` with TXID and watched for a reorg
  like any other.
* ``paid_by`` TXID with ``rest`` (``requeue`` or ``return``, the admin's explicit choice):
  TXID pays only some of the withdrawals. Those are booked as above; the rest are re-queued
  or returned as by ``requeue``/``return``, on the same proofs: no version of the batch can
  confirm (none known to the node and one of its coins spent by a confirmed transaction,
  or none ever signed), and every other live payer the signer lists for the rest is proven
  the same way, then given up at the signer with the batch's versions.

TXID's fee share (:func:`fee_share`): its fee (what its inputs were worth less its outputs)
is split equally over its payments, each output but those to an internal address of ours
(change, sweep, refill: ours, not paid for), as the payout job splits a batch's fee equally
over its withdrawals; the batch books the shares of the outputs that pay its withdrawals,
rounded down. The rest of the fee belongs to payments that are not this batch's: not ours
to book here (a custody difference until a person books what those outputs were).

:func:`prepare` does every network call (the node, then the signer) before any transaction
opens; :func:`resolve` then makes the change in the caller's unit of work. It claims the
batch with one conditional UPDATE (``status = 'stuck'``): of two resolutions at once the
second waits for the first's row lock and finds the batch no longer stuck, and is refused.
The batch's open ``payout_stuck`` items are resolved with the note, and one audit row
(``payout_batch.resolved``) records who did what and on which proof.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.audit.service import record
from satvault.backends.base import ChainBackend
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.errors import InvalidInput
from satvault.ledger.platform import ensure_platform_accounts
from satvault.logs import get_logger
from satvault.onchain.models import (
    OnchainPayment,
    ReviewKind,
)
from satvault.payouts.models import (
    BatchStatus,
    PayoutBatch,
    PayoutInput,
    PayoutTx,
    Withdrawal,
)
from satvault.payouts.settle import (
    batch_withdrawals,
    book_payout,
    give_up,
    give_up_at_signer,
    release_coins,
    requeue,
)
from satvault.reconcile._proofs import (
    Batch,
    booked_elsewhere,
    fee_of,
    fee_share,
    first_known,
    internal_scripts,
    live_payers,
    match,
    no_version_can_confirm,
    payers_cannot_confirm,
    read_batch,
    refuse,
)
from satvault.reconcile.errors import SignerNotReached
from satvault.reconcile.review import close_open_items, resolution_note
from satvault.signing.base import Signer
from satvault.signing.errors import SignerError
from satvault.withdrawals.cancel import void_and_cancel

__all__ = ["ACTIONS", "RESTS", "Action", "Proof", "Rest", "claim_stuck", "fee_share", "prepare",
           "resolve"]

log = get_logger(__name__)

Action = Literal["requeue", "return", "paid_by"]
ACTIONS: tuple[Action, ...] = ("requeue", "return", "paid_by")
Rest = Literal["requeue", "return"]
RESTS: tuple[Rest, ...] = ("requeue", "return")
_TXID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Proof:
    """What :func:`prepare` found on the node, for :func:`resolve` to act on."""

    batch_id: str
    action: Action
    versions: tuple[str, ...]
    withdrawals: tuple[str, ...]
    why: str  # the proof, in words: audited
    txid: str | None = None  # paid_by: the paying transaction, its fee, block and depth
    fee_sat: int = 0
    height: int | None = None
    final: bool = False
    own_version: bool = False
    other_outputs: tuple[dict[str, Any], ...] = field(default=())
    given_up: tuple[str, ...] = ()  # earlier payers given up at the signer (requeue, return)
    rest: Rest | None = None  # paid_by: what becomes of the withdrawals TXID does not pay
    rest_withdrawals: tuple[str, ...] = ()
    fee_total_sat: int = 0  # paid_by: TXID's whole fee, over ``payments`` payments
    payments: int = 0


async def _prove_paid_by(sessions: async_sessionmaker[AsyncSession], backend: ChainBackend,
                         signer: Signer, settings: Settings, batch: Batch, txid: str, *,
                         rest: Rest | None, actor: str) -> Proof:
    st = await backend.transaction(txid)
    if st is None:
        raise refuse(batch.id, f"{txid} is not known to the node")
    if st.confirmations < settings.payout_confirmations:
        raise refuse(batch.id, f"{txid} has {st.confirmations} confirmation(s); a payout is "
                                f"booked at {settings.payout_confirmations}: wait for them")
    unpaid, used = match(batch.withdrawals, st.tx.outputs)
    if unpaid and not used:
        raise refuse(batch.id, f"{txid} does not pay {', '.join(unpaid)} (no output of at "
                                "least its amount to its address): it pays none of the batch's "
                                "withdrawals")
    if unpaid and rest is None:
        raise refuse(batch.id, f"{txid} does not pay {', '.join(unpaid)} (no output of at "
                                "least its amount to its address): to book the ones it pays "
                                "and re-queue or return the rest, choose what becomes of the "
                                "rest (--rest requeue|return, or rest in the request)")
    if not unpaid and rest is not None:
        raise refuse(batch.id, f"{txid} pays every withdrawal: there is no rest to "
                                f"{rest} (leave rest out)")
    other = await booked_elsewhere(sessions, batch.id, txid)
    if other is not None:
        raise refuse(batch.id, f"{txid} is batch {other}'s; one transaction is booked for "
                                "one batch here")
    own = next((v for v in batch.versions if v.txid == txid), None)
    if own is not None and unpaid:
        raise refuse(batch.id, f"{txid} is a version of it that does not pay "
                                f"{', '.join(unpaid)}: not resolved by hand")
    if own is not None:  # its other versions spend the same coins as this confirmed one
        known = await first_known(backend, [v.txid for v in batch.versions if v.txid != txid])
        if known is not None:
            raise refuse(batch.id, f"its version {known[0]} is known to the node too")
        why, fee = f"{txid}, a version of it, is confirmed", own.fee_sat
    else:
        # The rest are paid again or returned: no version may confirm, never-sent or not.
        why = await no_version_can_confirm(backend, batch, never_sent_will_do=rest is None)
        fee = await fee_of(backend, batch.id, st)
    given_up: tuple[str, ...] = ()
    if rest is not None:
        rest_wds = [w for w in batch.withdrawals if w.id in unpaid]
        payers = await live_payers(signer, batch, rest_wds)
        why = "; ".join([why, *await payers_cannot_confirm(backend, batch, payers)])
        given_up = tuple(p.txid for p in payers)
        try:
            await give_up_at_signer(
                signer, tuple(v.txid for v in batch.versions) + given_up,
                reason=f"payout batch {batch.id} resolved (paid by {txid}, the rest "
                       f"{rest}) by {actor}: {why}"[:500])
        except SignerError as exc:
            raise SignerNotReached(f"the signer could not be told that the versions of "
                                   f"{batch.id} are given up ({exc}); nothing was changed "
                                   "here: try again") from exc
    internal = await internal_scripts(sessions, st.tx.outputs)
    payments = len(used) + sum(1 for n, o in enumerate(st.tx.outputs)
                               if n not in used and o.script_pubkey not in internal)
    others = tuple({"vout": n, "value_sat": o.value_sat, "script_pubkey": o.script_pubkey.hex(),
                    "internal": o.script_pubkey in internal}
                   for n, o in enumerate(st.tx.outputs) if n not in used)
    paid = [w.id for w in batch.withdrawals if w.id not in unpaid]
    return Proof(batch.id, "paid_by", tuple(v.txid for v in batch.versions),
                 tuple(w.id for w in batch.withdrawals),
                 f"{txid} pays {'every withdrawal' if not unpaid else ', '.join(paid)} with "
                 f"{st.confirmations} confirmation(s); {why}", txid=txid,
                 fee_sat=fee_share(fee, ours=len(used), payments=payments),
                 height=st.block_height,
                 final=st.confirmations >= settings.payout_final_confirmations,
                 own_version=own is not None, other_outputs=others, given_up=given_up,
                 rest=rest, rest_withdrawals=tuple(unpaid), fee_total_sat=fee,
                 payments=payments)


async def prepare(sessions: async_sessionmaker[AsyncSession], *, backend: ChainBackend,
                  signer: Signer, settings: Settings, batch_id: str, action: str,
                  note: str, actor: str, txid: str | None = None,
                  rest: str | None = None) -> Proof:
    """Prove on the node that ``action`` (``rest``: with ``paid_by``, what becomes of the
    withdrawals TXID does not pay) is safe for the stuck batch, and give its versions and
    earlier payers up at the signer where withdrawals will be paid again or returned.
    Network calls only: no transaction is held. Raises :class:`InvalidInput`,
    :class:`NotFound`, :class:`CannotResolveBatch`, :class:`SignerNotReached` (nothing
    given up in the database), or the backend's ``BackendUnavailable``."""
    resolution_note(note)
    if action not in ACTIONS:
        raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}")
    if (action == "paid_by") != (txid is not None):
        raise InvalidInput("a txid is given with paid_by, and only with it")
    if txid is not None and not _TXID.fullmatch(txid):
        raise InvalidInput("txid must be 64 lower-case hex digits")
    if rest is not None and (action != "paid_by" or rest not in RESTS):
        raise InvalidInput(f"rest ({', '.join(RESTS)}) is given with paid_by, and only with it")
    batch = await read_batch(sessions, batch_id)
    if action == "paid_by":
        assert txid is not None
        return await _prove_paid_by(sessions, backend, signer, settings, batch, txid,
                                    rest=rest, actor=actor)
    payers = await live_payers(signer, batch, batch.withdrawals)
    earlier = await payers_cannot_confirm(backend, batch, payers)
    why = "; ".join([await no_version_can_confirm(backend, batch, never_sent_will_do=False),
                     *earlier])
    versions = tuple(v.txid for v in batch.versions)
    given_up = tuple(p.txid for p in payers)
    try:
        await give_up_at_signer(signer, versions + given_up, reason=f"payout batch {batch_id} "
                                f"resolved ({action}) by {actor}: {why}"[:500])
    except SignerError as exc:
        raise SignerNotReached(f"the signer could not be told that the versions of {batch_id} "
                               f"are given up ({exc}); nothing was changed here: try again"
                               ) from exc
    return Proof(batch_id, "requeue" if action == "requeue" else "return", versions,
                 tuple(w.id for w in batch.withdrawals), why, given_up=given_up)


async def claim_stuck(session: AsyncSession, batch_id: str) -> PayoutBatch:
    """Take the stuck batch (its row locked until commit) with one conditional UPDATE, or
    refuse: another resolution got there first (the second waits for the first's row lock,
    then finds the batch no longer stuck)."""
    res = await session.execute(update(PayoutBatch).where(
        PayoutBatch.id == batch_id, PayoutBatch.status == BatchStatus.STUCK,
    ).values(updated_at=utcnow()))
    batch = await session.get(PayoutBatch, batch_id, populate_existing=True)
    assert batch is not None
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise refuse(batch_id, f"it is {batch.status.value} now, not stuck")
    return batch


async def _claim(session: AsyncSession, proof: Proof) -> PayoutBatch:
    """Take the stuck batch, or refuse: another resolution got there first."""
    batch = await claim_stuck(session, proof.batch_id)
    versions = (await session.execute(select(PayoutTx.txid).where(
        PayoutTx.batch_id == proof.batch_id).order_by(PayoutTx.id))).scalars().all()
    wds = (await session.execute(select(Withdrawal.id).where(
        Withdrawal.batch_id == proof.batch_id))).scalars().all()
    # never so while stuck; proved on another state
    if tuple(versions) != proof.versions or set(wds) != set(proof.withdrawals):
        raise refuse(proof.batch_id, "its versions or withdrawals changed meanwhile: try "
                                      "again")
    return batch


async def _paid(session: AsyncSession, batch: PayoutBatch, proof: Proof, *, actor: str,
                note: str) -> tuple[list[Withdrawal], list[Withdrawal]]:
    """Book what TXID paid; the rest re-queued or returned. The paid ones and the rest."""
    assert proof.txid is not None
    rest = [w for w in await batch_withdrawals(session, batch.id)
            if w.id in proof.rest_withdrawals]
    requeue(rest)  # out of the batch first: the booking books what stays in it
    await session.flush()
    if proof.own_version:  # its coins are spent by it, as when the job books a version
        coins = (await session.execute(select(PayoutInput.payment_id).where(
            PayoutInput.batch_id == batch.id))).scalars().all()
        await session.execute(update(OnchainPayment).where(
            OnchainPayment.id.in_(coins), OnchainPayment.spent_by.is_(None),
        ).values(spent_by=proof.txid, updated_at=utcnow()))
    else:  # its own coins were never spent by it: free again
        await release_coins(session, batch_id=batch.id, versions=proof.versions)
    platform = await ensure_platform_accounts(session, "BTC")
    await book_payout(session, batch_id=batch.id, txid=proof.txid, fee_sat=proof.fee_sat,
                      platform=platform)
    batch.status, batch.txid, batch.fee_sat = BatchStatus.CONFIRMED, proof.txid, proof.fee_sat
    batch.confirmed_height, batch.updated_at = proof.height, utcnow()
    if proof.final:
        batch.final_at = batch.updated_at
    if proof.rest == "return":
        for w in rest:
            await void_and_cancel(session, w, why=f"returned by {actor}: {note}"[:120],
                                  code="withdrawal_returned")
    return await batch_withdrawals(session, batch.id), rest


async def resolve(session: AsyncSession, proof: Proof, *, actor: str, note: str
                  ) -> dict[str, Any]:
    """Resolve the batch as :func:`prepare` proved, in the caller's unit of work (see the
    module docstring); what was done. Raises :class:`CannotResolveBatch` if it is no longer
    stuck (resolved meanwhile)."""
    note = resolution_note(note)
    batch = await _claim(session, proof)
    before = {"status": BatchStatus.STUCK.value, "last_error": batch.last_error,
              "versions": list(proof.versions), "withdrawals": list(proof.withdrawals)}
    rest: list[Withdrawal] = []
    if proof.action == "paid_by":
        wds, rest = await _paid(session, batch, proof, actor=actor, note=note)
    else:
        error = f"{batch.last_error or 'stuck'}; resolved ({proof.action}) by {actor}"
        wds = await give_up(session, batch_id=batch.id, versions=proof.versions,
                            error=error[:2000])
        if proof.action == "return":
            for w in wds:
                await void_and_cancel(session, w, why=f"returned by {actor}: {note}"[:120],
                                      code="withdrawal_returned")
    items = await close_open_items(session, kind=ReviewKind.PAYOUT_STUCK.value,
                                   subject=batch.id, actor=actor, note=note)
    outcome: dict[str, Any] = {
        "action": proof.action, "batch": {"id": batch.id, "status": batch.status.value,
                                          "txid": batch.txid, "fee_sat": batch.fee_sat},
        "withdrawals": [{"id": w.id, "status": w.status.value} for w in wds],
        "proof": proof.why, "review_items": items}
    if proof.action == "paid_by":
        outcome["other_outputs"] = list(proof.other_outputs)
        outcome["fee"] = {"total_sat": proof.fee_total_sat, "payments": proof.payments,
                          "booked_sat": proof.fee_sat}
        if proof.rest is not None:
            outcome["rest"] = {"action": proof.rest, "withdrawals": [
                {"id": w.id, "status": w.status.value} for w in rest]}
            outcome["earlier_payers_given_up"] = list(proof.given_up)
    else:
        outcome["earlier_payers_given_up"] = list(proof.given_up)
    await record(session, actor=actor, action="payout_batch.resolved",
                 object=f"payout_batch:{batch.id}", before=before,
                 after={**outcome, "note": note})
    log.warning("payout_stuck_resolved", batch=batch.id, action=proof.action, actor=actor,
                txid=proof.txid)
    return outcome
