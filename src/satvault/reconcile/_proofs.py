"""What a stuck batch's resolution asks of the node and the signer before it acts (a payout's,
:mod:`satvault.reconcile.stuck`; a sweep's or refill's, :mod:`satvault.reconcile.stuck_moves`):
no version of the batch can confirm, no earlier payer of its withdrawals can, what a
transaction pays of it and which share of its fee is the batch's, whether a transaction is
booked for another batch already. Network calls and reads only; each refusal is a
:class:`CannotResolveBatch` with nothing changed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.base import ChainBackend, TxOut, TxStatus
from satvault.kernel.errors import NotFound
from satvault.onchain.models import INTERNAL_PURPOSES, OnchainAddress
from satvault.payouts.models import BatchStatus, MoveKind, PayoutBatch, PayoutTx, Withdrawal
from satvault.payouts.reorgs import batch_coins, missing_inputs
from satvault.payouts.settle import batch_withdrawals
from satvault.reconcile.errors import CannotResolveBatch, SignerNotReached
from satvault.signing.base import Payer, Signer
from satvault.signing.errors import SignerError, SignerProtocolError

__all__ = [
    "Batch",
    "booked_elsewhere",
    "fee_of",
    "fee_share",
    "first_known",
    "internal_scripts",
    "live_payers",
    "match",
    "no_version_can_confirm",
    "payers_cannot_confirm",
    "read_batch",
    "refuse",
    "spent_in_chain",
    "where",
]

# How the signer's PaidBefore names the transaction that paid a withdrawal already.
_PAID_BEFORE = re.compile(r"payment (\S+) was paid by ([0-9a-f]{64})")
_OUTPOINT = re.compile(r"([0-9a-f]{64}):([0-9]{1,9})")


@dataclass(frozen=True, slots=True)
class Batch:
    """A stuck batch as read before the proofs."""

    id: str
    kind: MoveKind
    last_error: str
    broadcast_attempts: int
    versions: tuple[PayoutTx, ...]
    coins: tuple[tuple[str, int], ...]
    withdrawals: tuple[Withdrawal, ...]


# What a batch is called in a refusal, by its id's prefix (``payouts.job.store_batch``).
_NOUNS = {"swp": "sweep", "rfl": "refill"}


def _noun(batch_id: str) -> str:
    return _NOUNS.get(batch_id.split("_", 1)[0], "payout batch")


def refuse(batch_id: str, why: str) -> CannotResolveBatch:
    return CannotResolveBatch(f"{_noun(batch_id)} {batch_id}: {why}; nothing was changed")


async def read_batch(sessions: async_sessionmaker[AsyncSession], batch_id: str,
                     kinds: Sequence[MoveKind] = (MoveKind.PAYOUT,)) -> Batch:
    """The stuck batch, of one of ``kinds``, as it is now; or refuse (:class:`NotFound`)."""
    async with sessions() as s:
        b = await s.get(PayoutBatch, batch_id)
        if b is None:
            raise NotFound(f"{_noun(batch_id)} {batch_id!r} not found")
        if b.kind not in kinds:
            where = ("satvault payouts resolve (payout-batches/{id}/resolve in the admin API)"
                     if b.kind is MoveKind.PAYOUT else "satvault custody resolve "
                     "(custody-moves/{id}/resolve in the admin API)")
            raise refuse(batch_id, f"it is a {b.kind.value}: resolve it with {where}")
        if b.status is not BatchStatus.STUCK:
            raise refuse(batch_id, f"it is {b.status.value}, not stuck")
        versions = (await s.execute(select(PayoutTx).where(
            PayoutTx.batch_id == batch_id).order_by(PayoutTx.id))).scalars().all()
        return Batch(b.id, b.kind, b.last_error or "", b.broadcast_attempts, tuple(versions),
                      tuple(await batch_coins(s, batch_id)),
                      tuple(await batch_withdrawals(s, batch_id)))


async def booked_elsewhere(sessions: async_sessionmaker[AsyncSession], batch_id: str,
                           txid: str) -> str | None:
    """The other batch ``txid`` is a version of, or is booked for, if any: one transaction
    is booked for one batch."""
    async with sessions() as s:
        return (await s.execute(select(PayoutTx.batch_id).where(
            PayoutTx.txid == txid, PayoutTx.batch_id != batch_id).union(
            select(PayoutBatch.id).where(PayoutBatch.txid == txid,
                                         PayoutBatch.id != batch_id)))).scalars().first()


async def first_known(backend: ChainBackend, txids: Sequence[str]) -> tuple[str, TxStatus] | None:
    """The first of ``txids`` the node knows (mempool or chain), with what it says."""
    for txid in txids:
        st = await backend.transaction(txid)
        if st is not None:
            return txid, st
    return None


def where(st: TxStatus) -> str:
    return f"confirmed ({st.confirmations})" if st.confirmations else "in the mempool"


async def spent_in_chain(backend: ChainBackend, coins: Sequence[tuple[str, int]], *,
                         first: bool = False) -> list[tuple[str, int]]:
    """Those of ``coins`` a confirmed transaction spends (their own transaction confirmed,
    gone from the chain's unspent outputs); with ``first``, at most the first."""
    found = []
    for txid, vout, elsewhere in await missing_inputs(backend, coins):
        if not elsewhere:
            continue
        own = await backend.transaction(txid)
        if own is not None and own.confirmations > 0 \
                and await backend.output(txid, vout, include_mempool=False) is None:
            found.append((txid, vout))
            if first:
                break
    return found


async def _spent_in_chain(backend: ChainBackend, coins: Sequence[tuple[str, int]]
                          ) -> tuple[str, int] | None:
    """One of ``coins`` a confirmed transaction spends, if any."""
    found = await spent_in_chain(backend, coins, first=True)
    return found[0] if found else None


async def no_version_can_confirm(backend: ChainBackend, batch: Batch, *,
                                  never_sent_will_do: bool) -> str:
    """Why no version of the batch can confirm, or refuse. ``never_sent_will_do``: a
    version no node ever accepted counts as one that cannot (``paid_by``; a sweep's
    ``abandon``, whose signed bytes only we hold)."""
    txids = [v.txid for v in batch.versions]
    if not txids:
        return "no version of it was ever signed"
    known = await first_known(backend, txids)
    if known is not None:
        raise refuse(batch.id, f"its version {known[0]} is known to the node "
                                f"({where(known[1])}): it may pay its withdrawals")
    spent = await _spent_in_chain(backend, batch.coins)
    if spent is not None:
        return (f"no version of it ({', '.join(txids)}) is known to the node, and its input "
                f"{spent[0]}:{spent[1]} is spent by a confirmed transaction")
    if never_sent_will_do and batch.broadcast_attempts == 0:
        return (f"no version of it ({', '.join(txids)}) is known to the node, and none was "
                "ever accepted by one")
    raise refuse(batch.id, f"none of its inputs is spent by a confirmed transaction, so a "
                            f"version of it ({', '.join(txids)}) could still confirm: resolve "
                            "it once one is")


def _outpoint(batch_id: str, value: str) -> tuple[str, int]:
    found = _OUTPOINT.fullmatch(value)
    if found is None:
        raise refuse(batch_id, f"the signer named {value!r} as an outpoint")
    return found[1], int(found[2])


async def live_payers(signer: Signer, batch: Batch, wds: Sequence[Withdrawal]
                       ) -> list[Payer]:
    """The transactions the signer signed paying ``wds`` (the batch's withdrawals that will
    be paid again or returned), other than the batch's own versions, that it has not given
    up: it would refuse (``PaidBefore``) to pay them from other coins while any is live."""
    own = {v.txid for v in batch.versions}
    try:
        found = await signer.payers([w.id for w in wds])
    except SignerProtocolError as exc:  # a signer older than ``payers``
        named = _PAID_BEFORE.search(batch.last_error)
        if named is None:
            return []
        raise refuse(batch.id, f"the signer says {named[1]} was paid by {named[2]} and "
                                f"cannot list what it signed ({exc}): upgrade it") from exc
    except SignerError as exc:
        raise SignerNotReached(f"the signer could not say which transactions it signed pay "
                               f"the withdrawals of {batch.id} ({exc}); nothing was changed "
                               "here: try again") from exc
    return [p for p in found if p.txid not in own]


async def payers_cannot_confirm(backend: ChainBackend, batch: Batch,
                                 payers: Sequence[Payer]) -> list[str]:
    """Why none of ``payers`` (:func:`_live_payers`) can confirm, by the proof the batch's
    own versions get: unknown to the node, one of its inputs spent by a confirmed
    transaction. Refuse otherwise: one the node knows pays (or may pay) the withdrawals, and
    one whose inputs are all unspent could still be mined by whoever holds its bytes."""
    whys = []
    for p in payers:
        refs = ", ".join(p.refs)
        st = await backend.transaction(p.txid)
        if st is not None:
            raise refuse(batch.id, f"the signer says {refs} was paid by {p.txid}, which the "
                                    f"node has ({where(st)}): if it pays the batch, resolve "
                                    f"it as paid by it (--paid-by {p.txid}, or action paid_by)")
        spent = await _spent_in_chain(backend, [_outpoint(batch.id, o) for o in p.outpoints])
        if spent is None:
            raise refuse(batch.id, f"the signer says {refs} was paid by {p.txid}: the node "
                                    "does not know it, but none of its inputs is spent by a "
                                    "confirmed transaction, so it could still confirm (whoever "
                                    "holds its bytes may have it mined): resolve the batch once "
                                    "one is")
        whys.append(f"{p.txid}, which the signer signed paying {refs}, is not known to the "
                    f"node and its input {spent[0]}:{spent[1]} is spent by a confirmed "
                    "transaction")
    return whys


def match(wds: Sequence[Withdrawal], outputs: Sequence[TxOut]
           ) -> tuple[list[str], set[int]]:
    """The withdrawals no output pays, and the outputs used: each withdrawal, smallest
    first, takes the smallest unused output to its address of at least its amount."""
    used: set[int] = set()
    unpaid = []
    for w in sorted(wds, key=lambda w: (w.amount_msat, w.id)):
        spk, sat = bytes.fromhex(w.script_pubkey or ""), w.amount_msat // 1000
        fits = [(o.value_sat, n) for n, o in enumerate(outputs)
                if n not in used and o.script_pubkey == spk and o.value_sat >= sat]
        if not fits:
            unpaid.append(w.id)
            continue
        used.add(min(fits)[1])
    return sorted(unpaid, key=[w.id for w in wds].index), used


async def fee_of(backend: ChainBackend, batch_id: str, st: TxStatus) -> int:
    """The fee ``st`` paid: what its inputs were worth less its outputs."""
    spent = 0
    for prev in st.tx.inputs:
        tx = await backend.transaction(prev.txid)
        if tx is None or prev.vout >= len(tx.tx.outputs):
            raise refuse(batch_id, f"the node does not know {prev.txid}, whose output "
                                    f"{st.txid} spends: its fee cannot be told")
        spent += tx.tx.outputs[prev.vout].value_sat
    fee = spent - sum(o.value_sat for o in st.tx.outputs)
    if fee < 0:
        raise refuse(batch_id, f"{st.txid} pays out more than it spends")
    return fee


def fee_share(fee_sat: int, *, ours: int, payments: int) -> int:
    """The part of a transaction's fee ``fee_sat`` a batch books for ``ours`` of its
    ``payments`` (its outputs but those to an internal address of ours): an equal share per
    payment, rounded down (what is left belongs to payments that are not the batch's)."""
    if not 0 < ours <= payments:
        raise ValueError(f"{ours} of {payments} payments")
    return fee_sat * ours // payments


async def internal_scripts(sessions: async_sessionmaker[AsyncSession], outputs: Sequence[TxOut]
                    ) -> set[bytes]:
    """Those of ``outputs``' scripts that are internal addresses of ours (change, sweep,
    refill): the platform pays them to itself, they are no payment."""
    spks = sorted({o.script_pubkey.hex() for o in outputs})
    async with sessions() as s:
        found = (await s.execute(select(OnchainAddress.script_pubkey).where(
            OnchainAddress.script_pubkey.in_(spks),
            OnchainAddress.purpose.in_(INTERNAL_PURPOSES)))).scalars().all()
    return {bytes.fromhex(spk) for spk in found}
