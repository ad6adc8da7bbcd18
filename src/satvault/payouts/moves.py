"""Booking a move between the platform's own wallets (a sweep or a refill) on the ledger.

A move is booked once, in the transaction that marks its batch confirmed, from what the
confirmed version of the transaction actually did: its inputs came from one tier (deposit
coins for a sweep, cold coins for a refill); each output is classified by the wallet its
script belongs to (a sweep's zero-value audit anchor, an ``OP_RETURN``, belongs to nobody and
moves nothing: it is skipped); the fee is what the inputs lost on the way. So::

    sweep   deposit_wallet → hot_wallet (semi-cold share), cold_wallet (cold share),
            network_fees (the miners' fee)
    refill  cold_wallet → hot_wallet (the refill), network_fees; change back to cold is not
            a move and is not booked

as one linked chain of transfers (all or nothing), with ids derived from the batch, so a
crash and a retry cannot book twice. Nothing here pays anyone outside the platform: an output
to a script that is not one of ours makes the booking fail loudly (the signer's allow-list
should have refused to sign it).
"""

from __future__ import annotations

from collections.abc import Sequence

from embit.transaction import Transaction
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.ledger.core import TransferSpec
from satvault.ledger.platform import PlatformAccounts
from satvault.ledger.store import create_transfers
from satvault.logs import get_logger
from satvault.onchain.models import OnchainAddress, OnchainPayment, OnchainWallet
from satvault.payouts.models import MoveKind, PayoutBatch, PayoutInput, PayoutTx
from satvault.signing.anchor import is_op_return

__all__ = ["SOURCE_ROLES", "MoveBookingError", "book_move", "book_move_outputs", "move_legs"]

log = get_logger(__name__)
MSAT = 1000


class MoveBookingError(RuntimeError):
    """A move's transaction does not add up, or pays outside the platform."""


def move_legs(source_role: str, inputs_sat: int, outputs: list[tuple[str | None, int]]
              ) -> tuple[dict[str, int], int]:
    """What a move moved: ``{destination role: sat}`` for outputs that left the source tier,
    and the fee. ``outputs`` are (role of the script's wallet or None, sat). Pure."""
    legs: dict[str, int] = {}
    total_out = 0
    for role, sat in outputs:
        if role is None:
            raise MoveBookingError(f"an output of {sat} sat pays a script that is none of the "
                                   "platform's wallets")
        total_out += sat
        if role != source_role:
            legs[role] = legs.get(role, 0) + sat
    fee = inputs_sat - total_out
    if fee < 0:
        raise MoveBookingError(f"outputs ({total_out} sat) exceed inputs ({inputs_sat} sat)")
    return legs, fee


# The tier a move takes its coins from (its inputs' wallet role).
SOURCE_ROLES = {MoveKind.SWEEP: "deposit", MoveKind.REFILL: "cold"}


async def book_move(session: AsyncSession, batch: PayoutBatch, version: PayoutTx,
                    platform: PlatformAccounts) -> tuple[dict[str, int], int]:
    """Book ``batch`` as done by its confirmed ``version``; what it moved (see
    :func:`book_move_outputs`)."""
    tx = Transaction.parse(bytes.fromhex(version.raw_tx))
    return await book_move_outputs(
        session, batch, txid=version.txid, fee_sat=version.fee_sat, platform=platform,
        outputs=[(bytes(o.script_pubkey.data), int(o.value)) for o in tx.vout])


async def book_move_outputs(session: AsyncSession, batch: PayoutBatch, *, txid: str,
                            outputs: Sequence[tuple[bytes, int]], fee_sat: int,
                            platform: PlatformAccounts) -> tuple[dict[str, int], int]:
    """Book ``batch`` as done by the confirmed transaction ``txid`` whose ``outputs`` are
    (script, sat) and whose fee is ``fee_sat``, spending the coins the batch holds
    (``payout_inputs``): ``({destination role: sat}, fee)``. The batch's own confirmation
    and a person's (:mod:`satvault.reconcile.stuck_moves`: a transaction the batch did not
    sign did the move) book through here alike."""
    source_role = SOURCE_ROLES[batch.kind]
    # The audit anchor (a zero-value OP_RETURN in a sweep) is nobody's and moves nothing: it
    # is left out. An OP_RETURN worth anything is not: it fails below like any stranger.
    vout = [(spk, sat) for spk, sat in outputs if not (sat == 0 and is_op_return(spk))]
    scripts = [spk.hex() for spk, _ in vout]
    roles = dict((await session.execute(
        select(OnchainAddress.script_pubkey, OnchainWallet.role)
        .join(OnchainWallet, OnchainWallet.id == OnchainAddress.wallet_id)
        .where(OnchainAddress.script_pubkey.in_(scripts)))).all())
    coins = (await session.execute(
        select(OnchainPayment.value_sat).join(
            PayoutInput, PayoutInput.payment_id == OnchainPayment.id)
        .where(PayoutInput.batch_id == batch.id))).scalars().all()
    inputs_sat = sum(int(v) for v in coins)
    legs, fee = move_legs(source_role, inputs_sat,
                          [(roles.get(spk), sat) for spk, (_, sat) in zip(scripts, vout,
                                                                          strict=True)])
    if fee != fee_sat:
        raise MoveBookingError(f"{batch.id}: the transaction's fee is {fee} sat, the version "
                               f"recorded {fee_sat}")
    account = {"deposit": platform.deposit_wallet.id, "hot": platform.hot_wallet.id,
               "cold": platform.cold_wallet.id}
    source = account[source_role]
    parts = [(f"mv:{batch.id}:{role}", account[role], sat) for role, sat in sorted(legs.items())
             if sat > 0]
    if fee:
        parts.append((f"mv:{batch.id}:fee", platform.network_fees.id, fee))
    specs = [TransferSpec(tid, debit, source, sat * MSAT, "BTC", linked=k < len(parts) - 1,
                          code=f"{batch.kind.value}_fee" if tid.endswith(":fee")
                          else batch.kind.value, ref=txid)
             for k, (tid, debit, sat) in enumerate(parts)]
    if not specs:
        return legs, fee
    outcomes = await create_transfers(session, specs)
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise MoveBookingError(f"the ledger refused the {batch.kind.value} {batch.id}: {bad}")
    log.info("move_booked", batch=batch.id, kind=batch.kind, txid=txid,
             legs={r: s for r, s in legs.items()}, fee_sat=fee)
    return legs, fee
