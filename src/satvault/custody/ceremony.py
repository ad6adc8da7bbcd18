"""The database side of the cold ceremony: a refill batch out to the cosigners and back.

A refill (``payout_batches.kind = 'refill'``) waits in ``cosigning`` with its unsigned PSBT
in ``psbt`` and the signatures merged so far in ``partial_psbt``.
:func:`refill_for_export` hands out the PSBT to sign; :func:`import_signatures` combines the
cosigners' files with the stored partial PSBT, after checking that they are the very
transaction the platform stored (same unsigned txid, same outputs), verifies every
signature (a bad one refuses the whole import, nothing stored), stores the merged PSBT and,
once m cosigners have signed every input, finalizes it and hands the signed transaction to
:func:`satvault.custody.refill.accept_signed`, which takes the batch on (broadcast, tracking,
booking) like any other.

Service functions: they take a session and plain values and never commit.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.custody.cold import (
    ColdWallet,
    InputSignatures,
    check_outputs,
    combine,
    finalize,
    inputs_without_prev_tx,
    read_psbt,
    signature_count,
    unsigned_txid,
)
from satvault.custody.errors import ColdPsbtError, CustodyError, PsbtMismatch
from satvault.db import utcnow
from satvault.kernel.errors import NotFound
from satvault.onchain.models import OnchainWallet
from satvault.payouts.models import BatchStatus, MoveKind, PayoutBatch

__all__ = ["ImportResult", "cold_wallet", "import_signatures", "refill_for_export"]


async def cold_wallet(session: AsyncSession, network: str) -> ColdWallet:
    text = (await session.execute(select(OnchainWallet.descriptor).where(
        OnchainWallet.role == "cold"))).scalar_one_or_none()
    if text is None:
        raise CustodyError("no cold wallet is registered (set cold_descriptor)")
    return ColdWallet.from_descriptor(text, network)


async def _refill(session: AsyncSession, batch_id: str, *, lock: bool = False) -> PayoutBatch:
    q = select(PayoutBatch).where(PayoutBatch.id == batch_id)
    batch = (await session.execute(q.with_for_update() if lock else q)).scalar_one_or_none()
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    if batch.kind is not MoveKind.REFILL:
        raise CustodyError(f"batch {batch_id} is a {batch.kind.value}, not a refill: only "
                           "refills are signed by the cold cosigners")
    if batch.status is not BatchStatus.COSIGNING:
        raise CustodyError(f"refill {batch_id} is {batch.status.value}, not cosigning")
    return batch


async def refill_for_export(session: AsyncSession, *, batch_id: str) -> PayoutBatch:
    """The refill batch whose PSBT the cosigners sign (it must be ``cosigning``, and its
    inputs carry their previous transactions, which the cosigners require)."""
    batch = await _refill(session, batch_id)
    bare = inputs_without_prev_tx(batch.psbt)
    if bare:
        raise CustodyError(
            f"refill {batch_id} was stored without the previous transactions of its inputs "
            f"({', '.join(map(str, bare))}), by an earlier satvault, and the cosigners refuse "
            "an input without one: the refill planner adds them on its next pass (the "
            "custody worker of `satvault serve`, with the chain node reachable, or \"ask for "
            "a refill\" on the admin page); export it then")
    return batch


@dataclass(frozen=True, slots=True)
class ImportResult:
    batch_id: str
    signatures: tuple[InputSignatures, ...]
    complete: bool
    txid: str | None = None  # set once finalized and handed over


async def _find_batch(session: AsyncSession, txid: str, name: str) -> str:
    """The refill in cosigning whose transaction ``name``'s PSBT is (found by its txid)."""
    rows = (await session.execute(select(PayoutBatch.id, PayoutBatch.psbt).where(
        PayoutBatch.kind == MoveKind.REFILL,
        PayoutBatch.status == BatchStatus.COSIGNING))).all()
    for batch_id, psbt in rows:
        if unsigned_txid(read_psbt(psbt)) == txid:
            return str(batch_id)
    raise NotFound(f"{name} is for transaction {txid}, which no refill in cosigning makes: "
                   "an altered copy, or the file of a refill that is done or abandoned; "
                   "give --batch to compare it with a refill")


async def import_signatures(session: AsyncSession, *, files: Sequence[tuple[str, str]],
                            network: str, batch_id: str | None = None) -> ImportResult:
    """Merge ``files`` (``(name, psbt text)``) into the refill's partial PSBT; see the
    module docstring."""
    if not files:
        raise ColdPsbtError("no PSBT files to import")
    parsed = [(name, read_psbt(text, name)) for name, text in files]
    if batch_id is None:
        batch_id = await _find_batch(session, unsigned_txid(parsed[0][1]), parsed[0][0])
    batch = await _refill(session, batch_id, lock=True)
    wallet = await cold_wallet(session, network)
    stored = read_psbt(batch.psbt, f"the stored PSBT of {batch_id}")
    base = read_psbt(batch.partial_psbt, f"the partial PSBT of {batch_id}") \
        if batch.partial_psbt else stored
    for name, psbt in parsed:
        try:
            check_outputs(psbt, stored)
        except PsbtMismatch as exc:
            raise PsbtMismatch(f"{name} is not refill {batch_id}'s transaction: {exc}") from exc
    merged = combine([base, *(p for _, p in parsed)],
                     [f"refill {batch_id}", *(n for n, _ in parsed)])
    counts = signature_count(merged, wallet)  # a bad signature raises: nothing is stored
    if not all(c.cold for c in counts):
        raise ColdPsbtError("a refill spends only cold coins; this PSBT has other inputs")
    batch.partial_psbt = str(merged.to_base64())
    batch.updated_at = utcnow()
    if not all(c.complete for c in counts):
        return ImportResult(batch_id, tuple(counts), False)
    final = finalize(merged, wallet)
    # The hand-over: satvault.custody.refill.accept_signed stores the signed transaction on
    # the batch and moves it on (signed → broadcast …), in this unit of work.
    try:
        refill = importlib.import_module("satvault.custody.refill")
    except ModuleNotFoundError as exc:
        raise CustodyError("refill is fully signed, but this satvault cannot take a signed "
                           "refill over (satvault.custody.refill is missing)") from exc
    await refill.accept_signed(session, batch_id, final.raw_hex, final.txid, final.psbt_b64)
    return ImportResult(batch_id, tuple(counts), True, final.txid)
