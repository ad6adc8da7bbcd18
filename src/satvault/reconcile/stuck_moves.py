"""Resolving a ``stuck`` sweep or refill: a person decides, the chain must agree.

A sweep (deposit coins → the semi-cold and cold wallets, :mod:`satvault.custody.sweeps`) or
a refill (cold → semi-cold, :mod:`satvault.custody.refill`) is a ``payout_batches`` row
like a payout, and the payout job makes it ``stuck`` the same ways (review item
``payout_stuck``, alerted as money at risk): the hot signer refused a sweep's first version
(a signer of another seed: ``UnknownInput``), or the node rejected the move while one of its
coins was spent by a transaction we do not know. The payout job never moves it again and
its coins stay reserved (``payout_inputs``), so no later sweep or refill spends them. An
admin resolves it one of two ways, each refused (:class:`CannotResolveBatch`, nothing
changed) unless the node proves it safe:

* ``abandon``: no version of the move can confirm any more: none is known to the node, and
  one of its coins is spent by a confirmed transaction (so by none of its versions), or
  none was ever signed. For a sweep, also when no version was ever accepted by a node: the
  hot signer hands its signed bytes to us alone and its audit log keeps no signature, so
  nobody else can broadcast one (a refill's signatures are in the cosigners' files: not
  for a refill). The move is ``abandoned`` (:func:`~satvault.payouts.settle.give_up`) and
  its coins are free again, but for those a confirmed transaction spends: one the chain
  watcher noted spent by it keeps that ``spent_by``; one the books still take for unspent
  (the watcher had noted a version of the move spending it, which the stranger's
  transaction replaced) stays held by the abandoned move, so no later move tries it.
  Nothing is booked: a move is booked when it confirms, so the books keep the coins where
  they were, and a coin a stranger took is a custody difference for a person.
* ``confirmed_by`` TXID: a transaction with ``payout_confirmations`` did the move. A
  version of the move is booked exactly as the payout job books it
  (:func:`~satvault.payouts.moves.book_move`). Another transaction (one signed before a
  database restore, say) must spend nothing but coins of the move, and pay nothing but the
  platform's own move addresses (change, sweep or refill addresses of the hot and cold
  wallets, each output recorded by the chain watcher as one of our moves, not as funding
  from outside; a zero-value ``OP_RETURN`` aside), and be no other batch's. It is booked as
  the move's own confirmation would be, from what it did
  (:func:`~satvault.payouts.moves.book_move_outputs`): ``deposit_wallet`` (a sweep) or
  ``cold_wallet`` (a refill) → ``hot_wallet`` / ``cold_wallet`` + ``network_fees``, the
  fee being what the coins it spent were worth less its outputs; the coins of the move it
  did not spend are free again. The move is ``confirmed`` with TXID, watched for a reorg
  like any other.

There is no earlier payer to give up at the signer: a sweep pays no withdrawal (no
``ref``), so the signer never refuses one for an earlier signature (nothing like
``PaidBefore``), and a refill is signed by the cold cosigners. Only the node is asked.

:func:`prepare` makes every network call before any transaction opens; :func:`resolve` then
makes the change in the caller's unit of work, claiming the move with one conditional
UPDATE (:func:`~satvault.reconcile.stuck.claim_stuck`): of two resolutions at once, one
happens and the other is refused. The move's open ``payout_stuck`` items are resolved with
the note, and one audit row (``custody_move.resolved``) records who did what, on which
proof.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.audit import anchors
from satvault.audit.service import record
from satvault.backends.base import ChainBackend, TxOut, TxStatus
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.errors import InvalidInput
from satvault.ledger.platform import ensure_platform_accounts
from satvault.logs import get_logger
from satvault.onchain.models import (
    INTERNAL_PURPOSES,
    OnchainAddress,
    OnchainPayment,
    OnchainWallet,
    ReviewKind,
)
from satvault.payouts.models import BatchStatus, MoveKind, PayoutBatch, PayoutInput, PayoutTx
from satvault.payouts.moves import SOURCE_ROLES, book_move, book_move_outputs
from satvault.payouts.settle import give_up
from satvault.reconcile._proofs import (
    Batch,
    booked_elsewhere,
    first_known,
    no_version_can_confirm,
    read_batch,
    refuse,
    spent_in_chain,
    where,
)
from satvault.reconcile.review import close_open_items, resolution_note
from satvault.reconcile.stuck import claim_stuck
from satvault.signing.anchor import is_op_return

__all__ = ["ACTIONS", "Action", "MoveProof", "prepare", "resolve"]

log = get_logger(__name__)

Action = Literal["abandon", "confirmed_by"]
ACTIONS: tuple[Action, ...] = ("abandon", "confirmed_by")
_TXID = re.compile(r"[0-9a-f]{64}")
_MOVES = (MoveKind.SWEEP, MoveKind.REFILL)
# The wallets a move pays: the semi-cold (``hot``) and cold tiers.
_DESTINATIONS = ("hot", "cold")


@dataclass(frozen=True, slots=True)
class _Coin:
    id: int
    txid: str
    vout: int
    value_sat: int


@dataclass(frozen=True, slots=True)
class MoveProof:
    """What :func:`prepare` found on the node, for :func:`resolve` to act on."""

    batch_id: str
    kind: MoveKind
    action: Action
    versions: tuple[str, ...]
    coins: tuple[int, ...]  # the coins (onchain_payments ids) the move holds
    why: str  # the proof, in words: audited
    txid: str | None = None  # confirmed_by: the transaction, what it spent and paid
    spent: tuple[int, ...] = ()
    outputs: tuple[tuple[bytes, int], ...] = ()
    fee_sat: int = 0
    height: int | None = None
    final: bool = False
    own_version: bool = False
    gone: tuple[int, ...] = ()  # abandon: its coins a confirmed transaction spends


async def _coins(sessions: async_sessionmaker[AsyncSession], batch_id: str) -> list[_Coin]:
    async with sessions() as s:
        rows = (await s.execute(
            select(OnchainPayment.id, OnchainPayment.txid, OnchainPayment.vout,
                   OnchainPayment.value_sat)
            .join(PayoutInput, PayoutInput.payment_id == OnchainPayment.id)
            .where(PayoutInput.batch_id == batch_id).order_by(OnchainPayment.id))).all()
    return [_Coin(int(i), t, int(v), int(sat)) for i, t, v, sat in rows]


async def _only_our_moves(sessions: async_sessionmaker[AsyncSession], batch: Batch,
                          txid: str, outputs: Sequence[TxOut]) -> None:
    """Refuse unless every output of ``txid`` (a zero-value ``OP_RETURN`` aside) pays a move
    address of our hot or cold wallet and was recorded by the chain watcher as a move's, not
    credited as funding: what the move's booking books, and nothing the books hold already."""
    spks = sorted({o.script_pubkey.hex() for o in outputs})
    async with sessions() as s:
        ours = {spk: (role, purpose) for spk, role, purpose in (await s.execute(
            select(OnchainAddress.script_pubkey, OnchainWallet.role, OnchainAddress.purpose)
            .join(OnchainWallet, OnchainWallet.id == OnchainAddress.wallet_id)
            .where(OnchainAddress.script_pubkey.in_(spks)))).all()}
        recorded = {int(n): bool(outside) for n, outside in (await s.execute(
            select(OnchainPayment.vout, OnchainPayment.paid_from_outside)
            .where(OnchainPayment.txid == txid))).all()}
    for n, o in enumerate(outputs):
        if o.value_sat == 0 and is_op_return(o.script_pubkey):
            continue  # a sweep's audit anchor: nobody's, it moves nothing
        role, purpose = ours.get(o.script_pubkey.hex(), (None, None))
        if role not in _DESTINATIONS or purpose not in INTERNAL_PURPOSES:
            raise refuse(batch.id, f"{txid}'s output {n} ({o.value_sat} sat) pays "
                                    f"{o.script_pubkey.hex()}, not an address of our hot or "
                                    "cold wallets that our moves pay: it is no move of ours "
                                    "(book what it did by hand)")
        if n not in recorded:
            raise refuse(batch.id, f"the chain watcher has not recorded {txid}'s output {n} "
                                    "(to an address of ours): let it catch up first (an "
                                    "address a restored database allocated only after that "
                                    "block is never looked for again: book it by hand)")
        if recorded[n]:
            raise refuse(batch.id, f"{txid}'s output {n} is recorded as paid from outside "
                                    "(credited as funding): it is no move of ours")


async def _prove_confirmed_by(sessions: async_sessionmaker[AsyncSession], backend: ChainBackend,
                              settings: Settings, batch: Batch, coins: Sequence[_Coin],
                              txid: str) -> MoveProof:
    st: TxStatus | None = await backend.transaction(txid)
    if st is None:
        raise refuse(batch.id, f"{txid} is not known to the node")
    if st.confirmations < settings.payout_confirmations:
        raise refuse(batch.id, f"{txid} has {st.confirmations} confirmation(s); a move is "
                                f"booked at {settings.payout_confirmations}: wait for them")
    other = await booked_elsewhere(sessions, batch.id, txid)
    if other is not None:
        raise refuse(batch.id, f"{txid} is batch {other}'s; one transaction is booked for "
                                "one batch here")
    versions = tuple(v.txid for v in batch.versions)
    ids = tuple(c.id for c in coins)
    final = st.confirmations >= settings.payout_final_confirmations
    own = next((v for v in batch.versions if v.txid == txid), None)
    if own is not None:  # its other versions spend the same coins as this confirmed one
        known = await first_known(backend, [t for t in versions if t != txid])
        if known is not None:
            raise refuse(batch.id, f"its version {known[0]} is known to the node too "
                                    f"({where(known[1])})")
        return MoveProof(batch.id, batch.kind, "confirmed_by", versions, ids,
                         f"{txid}, a version of it, is confirmed ({st.confirmations})",
                         txid=txid, spent=ids, fee_sat=own.fee_sat, height=st.block_height,
                         final=final, own_version=True)
    by_outpoint = {(c.txid, c.vout): c for c in coins}
    if st.tx.is_coinbase or not st.tx.inputs:
        raise refuse(batch.id, f"{txid} spends none of its coins")
    spent: list[_Coin] = []
    for op in st.tx.inputs:
        coin = by_outpoint.get((op.txid, op.vout))
        if coin is None:
            raise refuse(batch.id, f"{txid} spends {op.txid}:{op.vout}, which is not a coin "
                                    f"of this {batch.kind.value}: it did not do this move "
                                    "(book what it did by hand)")
        spent.append(coin)
    await _only_our_moves(sessions, batch, txid, st.tx.outputs)
    fee = sum(c.value_sat for c in spent) - sum(o.value_sat for o in st.tx.outputs)
    if fee < 0:
        raise refuse(batch.id, f"{txid} pays out more than its coins are worth")
    why = await no_version_can_confirm(backend, batch, never_sent_will_do=False)
    return MoveProof(batch.id, batch.kind, "confirmed_by", versions, ids,
                     f"{txid} did the {batch.kind.value} with {st.confirmations} "
                     f"confirmation(s), spending {len(spent)} of its {len(coins)} coin(s) "
                     f"and paying only our move addresses; {why}", txid=txid,
                     spent=tuple(c.id for c in spent),
                     outputs=tuple((o.script_pubkey, o.value_sat) for o in st.tx.outputs),
                     fee_sat=fee, height=st.block_height, final=final)


async def prepare(sessions: async_sessionmaker[AsyncSession], *, backend: ChainBackend,
                  settings: Settings, batch_id: str, action: str, note: str,
                  txid: str | None = None) -> MoveProof:
    """Prove on the node that ``action`` is safe for the stuck sweep or refill. Network
    calls and reads only: no transaction is held. Raises :class:`InvalidInput`,
    :class:`NotFound`, :class:`CannotResolveBatch`, or the backend's
    ``BackendUnavailable``."""
    resolution_note(note)
    if action not in ACTIONS:
        raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}")
    if (action == "confirmed_by") != (txid is not None):
        raise InvalidInput("a txid is given with confirmed_by, and only with it")
    if txid is not None and not _TXID.fullmatch(txid):
        raise InvalidInput("txid must be 64 lower-case hex digits")
    batch = await read_batch(sessions, batch_id, kinds=_MOVES)
    coins = await _coins(sessions, batch_id)
    if action == "confirmed_by":
        assert txid is not None
        return await _prove_confirmed_by(sessions, backend, settings, batch, coins, txid)
    # Only we hold a sweep's signed bytes; a refill's signatures are in the cosigners' files.
    why = await no_version_can_confirm(backend, batch,
                                       never_sent_will_do=batch.kind is MoveKind.SWEEP)
    gone = set(await spent_in_chain(backend, [(c.txid, c.vout) for c in coins]))
    return MoveProof(batch.id, batch.kind, "abandon", tuple(v.txid for v in batch.versions),
                     tuple(c.id for c in coins), why,
                     gone=tuple(c.id for c in coins if (c.txid, c.vout) in gone))


async def _book(session: AsyncSession, batch: PayoutBatch, proof: MoveProof
                ) -> tuple[dict[str, int], int, tuple[int, ...]]:
    """Book the move as done by TXID; what it moved, its fee and the coins freed."""
    assert proof.txid is not None
    platform = await ensure_platform_accounts(session, "BTC")
    released: tuple[int, ...] = ()
    if proof.own_version:  # as the payout job books a confirmed version
        version = (await session.execute(select(PayoutTx).where(
            PayoutTx.txid == proof.txid))).scalar_one()
        legs, fee = await book_move(session, batch, version, platform)
        await session.execute(update(OnchainPayment).where(
            OnchainPayment.id.in_(proof.coins), OnchainPayment.spent_by.is_(None),
        ).values(spent_by=proof.txid, updated_at=utcnow()))
        if batch.kind is MoveKind.SWEEP and proof.height is not None:
            await anchors.confirm(session, batch_id=batch.id, txid=proof.txid,
                                  height=proof.height)
    else:
        released = tuple(c for c in proof.coins if c not in proof.spent)
        # The watcher may have noted its coins spent by a version of it seen in a mempool;
        # none will confirm now. TXID spent its own share of them.
        await session.execute(update(OnchainPayment).where(
            OnchainPayment.spent_by.in_(proof.versions)).values(spent_by=None,
                                                                updated_at=utcnow()))
        await session.execute(update(OnchainPayment).where(
            OnchainPayment.id.in_(proof.spent)).values(spent_by=proof.txid,
                                                       updated_at=utcnow()))
        await session.execute(delete(PayoutInput).where(
            PayoutInput.batch_id == batch.id, PayoutInput.payment_id.in_(released)))
        await anchors.release(session, batch_id=batch.id)  # TXID carries no anchor of ours
        await session.flush()
        legs, fee = await book_move_outputs(session, batch, txid=proof.txid,
                                            outputs=proof.outputs, fee_sat=proof.fee_sat,
                                            platform=platform)
    batch.status, batch.txid, batch.fee_sat = BatchStatus.CONFIRMED, proof.txid, fee
    batch.confirmed_height, batch.updated_at = proof.height, utcnow()
    if proof.final:
        batch.final_at = batch.updated_at
    return legs, fee, released


async def _keep_out(session: AsyncSession, batch_id: str, gone: Sequence[int]
                    ) -> tuple[int, ...]:
    """Those of the abandoned move's ``gone`` coins (spent in the chain) the books still
    take for unspent, held by it again so no later move spends them: the chain watcher had
    noted them spent by a version of the move, which a stranger's transaction replaced."""
    unnamed = tuple((await session.execute(select(OnchainPayment.id).where(
        OnchainPayment.id.in_(gone), OnchainPayment.spent_by.is_(None)))).scalars().all())
    session.add_all([PayoutInput(batch_id=batch_id, payment_id=c) for c in unnamed])
    await session.flush()
    return unnamed


async def _outpoints(session: AsyncSession, ids: Sequence[int]) -> list[dict[str, Any]]:
    rows = (await session.execute(
        select(OnchainPayment.txid, OnchainPayment.vout, OnchainPayment.spent_by)
        .where(OnchainPayment.id.in_(ids)).order_by(OnchainPayment.id))).all()
    return [{"outpoint": f"{t}:{v}", "spent_by": by} for t, v, by in rows]


async def resolve(session: AsyncSession, proof: MoveProof, *, actor: str, note: str
                  ) -> dict[str, Any]:
    """Resolve the move as :func:`prepare` proved, in the caller's unit of work (see the
    module docstring); what was done. Raises :class:`CannotResolveBatch` if it is no longer
    stuck (resolved meanwhile)."""
    note = resolution_note(note)
    batch = await claim_stuck(session, proof.batch_id)
    versions = (await session.execute(select(PayoutTx.txid).where(
        PayoutTx.batch_id == batch.id).order_by(PayoutTx.id))).scalars().all()
    coins = (await session.execute(select(PayoutInput.payment_id).where(
        PayoutInput.batch_id == batch.id))).scalars().all()
    if tuple(versions) != proof.versions or set(coins) != set(proof.coins):
        # never so while stuck; proved on another state
        raise refuse(batch.id, "its versions or coins changed meanwhile: try again")
    before = {"status": BatchStatus.STUCK.value, "last_error": batch.last_error,
              "txid": batch.txid, "versions": list(proof.versions)}
    booked: dict[str, Any] | None = None
    kept: tuple[int, ...] = ()
    if proof.action == "abandon":
        error = f"{batch.last_error or 'stuck'}; abandoned by {actor}"
        await give_up(session, batch_id=batch.id, versions=proof.versions, error=error[:2000])
        kept = await _keep_out(session, batch.id, proof.gone)
        released = tuple(c for c in proof.coins if c not in kept)
    else:
        legs, fee, released = await _book(session, batch, proof)
        booked = {"from": SOURCE_ROLES[batch.kind], "hot_sat": legs.get("hot", 0),
                  "cold_sat": legs.get("cold", 0), "fee_sat": fee}
    freed, held = await _outpoints(session, released), await _outpoints(session, kept)
    items = await close_open_items(session, kind=ReviewKind.PAYOUT_STUCK.value,
                                   subject=batch.id, actor=actor, note=note)
    outcome: dict[str, Any] = {
        "action": proof.action,
        "move": {"id": batch.id, "kind": batch.kind.value, "status": batch.status.value,
                 "txid": batch.txid, "fee_sat": batch.fee_sat},
        "proof": proof.why, "review_items": items,
        "released": freed}
    if held:
        outcome["kept"] = held
    if booked is not None:
        outcome["booked"] = booked
    await record(session, actor=actor, action="custody_move.resolved",
                 object=f"payout_batch:{batch.id}", before=before,
                 after={**outcome, "note": note})
    log.warning("move_stuck_resolved", batch=batch.id, kind=batch.kind, action=proof.action,
                actor=actor, txid=proof.txid)
    return outcome
