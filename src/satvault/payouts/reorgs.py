"""Watching booked moves until they are final: a reorg may take a confirmed move out of the chain.

A move (payout, sweep or refill) is booked once, when a version of it has
``payout_confirmations``. Until it is ``payout_final_confirmations`` deep, a reorg can still
remove its block; so at every pass the payout job asks the node about the booked
transaction of each confirmed move not yet final (``payout_batches.final_at`` is null):

* deep enough: ``final_at`` is set and the move is never looked at again (a partial index
  holds the watched ones, so a final move costs nothing per pass);
* in a block: its ``confirmed_height`` follows the block it is in now;
* in the mempool: nothing to do, it waits for a block;
* gone (out of the chain and of the mempool): the stored raw bytes are broadcast again. The
  node usually takes them back ("already known" or "already in chain" is fine too).

If the node refuses them, the inputs say why. One spent by another transaction is a
conflict: the move can never confirm as booked. When that transaction is another version of
a payout (the first one, mined in place of its fee bump), the payout is booked again to it
(:func:`~satvault.payouts.settle.rebook_payout`: the fee difference back to the payers and
the platform, the withdrawals' txid and fee, the inputs' ``spent_by``). Otherwise a person is
told once (review item ``payout_reorged_conflict``, naming a sweep's or refill's own other
version and both fees when that is what confirmed). An input whose own transaction is gone
too waits (a reorged move of ours is sent again before its children; a vanished deposit is
the chain watcher's). Any other refusal with every input unspent is told once as
``payout_reorged_rejected`` and sent again at every pass. Nothing else here changes the
ledger: the books keep the move as booked, and a person decides what a conflict means for
them.

Nothing is stored between the network calls and the decision, so a job restarted at any point
does the same again: the bytes go out again (harmless), the review item is written once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.audit.models import AuditEvent
from satvault.audit.service import record
from satvault.backends.base import ChainBackend
from satvault.backends.errors import BackendUnavailable, TxAlreadyInChain, TxRejected
from satvault.db import utcnow
from satvault.kernel.retrying import retrying
from satvault.ledger.platform import ensure_platform_accounts
from satvault.logs import get_logger
from satvault.onchain.models import OnchainPayment, OnchainPaymentStatus
from satvault.payouts.models import BatchStatus, MoveKind, PayoutBatch, PayoutInput, PayoutTx
from satvault.payouts.settle import rebook_payout

__all__ = ["ReorgWatch", "Tell", "WatchReport", "batch_coins", "missing_inputs"]

log = get_logger(__name__)

# Writes one open review item of ``kind`` for a batch, noting ``why`` on it (the payout job's
# ``_tell_once``).
Tell = Callable[..., Awaitable[None]]


async def batch_coins(session: AsyncSession, batch_id: str) -> list[tuple[str, int]]:
    """The outpoints a move spends, in the order they were recorded."""
    return [(t, v) for t, v in (await session.execute(
        select(OnchainPayment.txid, OnchainPayment.vout).join(
            PayoutInput, PayoutInput.payment_id == OnchainPayment.id).where(
            PayoutInput.batch_id == batch_id).order_by(OnchainPayment.id))).all()]


async def missing_inputs(backend: ChainBackend, coins: Sequence[tuple[str, int]]
                         ) -> list[tuple[str, int, bool]]:
    """Those of a refused move's inputs that are no longer unspent (mempool included), each
    with whether another transaction spends it (True) or it is gone with its own
    transaction, a reorg having taken it (False)."""
    missing = []
    for txid, vout in coins:
        if await backend.output(txid, vout, include_mempool=True) is None:
            missing.append((txid, vout, await backend.transaction(txid) is not None))
    return missing


@dataclass
class WatchReport:
    rebroadcast: int = 0  # moves reorged out and broadcast again
    conflicts: int = 0  # moves reorged out whose input was spent elsewhere
    rebooked: int = 0  # payouts booked again to their own other version that confirmed
    final: int = 0
    errors: list[str] = field(default_factory=list)


class ReorgWatch:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: ChainBackend,
                 final_confirmations: int, tell: Tell) -> None:
        self.sessions = sessions
        self.backend = backend
        self.final_confirmations = final_confirmations
        self.tell = tell

    async def step(self) -> WatchReport:
        """Look once at every confirmed move that is not final yet, oldest first (a sweep is
        sent again before the payout that spends its output)."""
        report = WatchReport()
        async with self.sessions() as s:
            watched = (await s.execute(
                select(PayoutBatch.id, PayoutBatch.txid, PayoutBatch.confirmed_height)
                .where(PayoutBatch.status == BatchStatus.CONFIRMED,
                       PayoutBatch.final_at.is_(None))
                .order_by(PayoutBatch.created_at, PayoutBatch.id))).all()
        for batch_id, txid, height in watched:
            if txid is None:  # never so: a confirmed move has its booked txid
                continue
            try:
                await self._look(batch_id, txid, height, report)
            except BackendUnavailable as exc:
                report.errors.append(f"{batch_id}: {exc}")
                log.warning("move_watch_retry_later", batch=batch_id, error=str(exc))
        return report

    async def _look(self, batch_id: str, txid: str, height: int | None,
                    report: WatchReport) -> None:
        st = await self.backend.transaction(txid)
        if st is None:
            await self._rebroadcast(batch_id, txid, report)
            return
        final = st.confirmations >= self.final_confirmations
        if final or (st.confirmations > 0 and st.block_height != height):
            await retrying(self.sessions, partial(self._note, batch_id=batch_id,
                                                  height=st.block_height, final=final))
            report.final += final

    async def _note(self, session: AsyncSession, *, batch_id: str, height: int | None,
                    final: bool) -> None:
        b = await session.get(PayoutBatch, batch_id, with_for_update=True)
        if b is None or b.status != BatchStatus.CONFIRMED or b.final_at is not None:
            return
        b.confirmed_height, b.updated_at = height, utcnow()
        if final:
            b.final_at = b.updated_at
            log.info("move_final", batch=batch_id, txid=b.txid, height=height)
        else:
            log.info("move_confirmed_again", batch=batch_id, txid=b.txid, height=height)

    async def _rebroadcast(self, batch_id: str, txid: str, report: WatchReport) -> None:
        async with self.sessions() as s:
            raw = (await s.execute(select(PayoutTx.raw_tx).where(
                PayoutTx.txid == txid))).scalar_one_or_none()
            coins = await batch_coins(s, batch_id)
        if raw is None:
            # Booked by a person as paid or done by a transaction we never stored (``satvault
            # payouts resolve --paid-by``, ``satvault custody resolve --confirmed-by``): we
            # have no bytes to send again. Other nodes usually put a reorged transaction back
            # in their mempools; a person is told once.
            why = ("reorged out of the chain after it was booked, and satvault holds no copy "
                   "of this transaction (booked as paid or done by it by a person) to send "
                   "again: it may come back from other nodes' mempools; if it does not, its "
                   "withdrawals are not paid, or its move is not done")
            await retrying(self.sessions, partial(
                self.tell, batch_id=batch_id, kind="payout_reorged_rejected", why=why))
            report.errors.append(f"{batch_id}: {why}")
            log.error("move_reorged_no_copy", batch=batch_id, txid=txid)
            return
        try:
            await self.backend.broadcast(raw)
        except TxAlreadyInChain:  # mined again between the two calls
            return
        except TxRejected as exc:
            await self._refused(batch_id, txid, exc, coins, report)
            return
        report.rebroadcast += 1
        log.warning("move_reorged_rebroadcast", batch=batch_id, txid=txid)

    async def _rebook(self, session: AsyncSession, *, batch_id: str, booked: str, other: str
                      ) -> bool:
        """A payout whose ``other`` version confirmed after a reorg took the ``booked`` one:
        its withdrawals, fee, inputs and books follow the version that paid (found from
        outside: the books kept the bump's fee and txid, and the customer its fee share).
        False for a sweep or refill (a person re-books those) or a batch that moved on."""
        b = await session.get(PayoutBatch, batch_id, with_for_update=True)
        if b is None or b.status != BatchStatus.CONFIRMED or b.txid != booked \
                or b.kind is not MoveKind.PAYOUT:
            return False
        fees = dict((await session.execute(select(PayoutTx.txid, PayoutTx.fee_sat).where(
            PayoutTx.batch_id == batch_id))).all())
        platform = await ensure_platform_accounts(session, "BTC")
        before = (await session.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "payout_batch.rebooked", AuditEvent.object == batch_id))
        ).scalar_one()
        await rebook_payout(session, batch_id=batch_id, booked_txid=booked,
                            booked_fee_sat=int(fees[booked]), txid=other,
                            fee_sat=int(fees[other]), platform=platform,
                            generation=int(before))
        now = utcnow()
        await session.execute(update(OnchainPayment).where(OnchainPayment.id.in_(
            select(PayoutInput.payment_id).where(PayoutInput.batch_id == batch_id)))
            .values(spent_by=other, updated_at=now))
        b.txid, b.fee_sat, b.confirmed_height, b.updated_at = other, int(fees[other]), None, now
        await record(session, actor="system", action="payout_batch.rebooked",
                     object=batch_id, before={"txid": booked, "fee_sat": int(fees[booked])},
                     after={"txid": other, "fee_sat": int(fees[other])})
        log.warning("move_rebooked", batch=batch_id, was=booked, now=other)
        return True

    async def _sibling_in_chain(self, batch_id: str, txid: str) -> tuple[str, int, int] | None:
        """Another version of the move that is in a block now: (its txid, its fee, the booked
        version's fee), or None."""
        async with self.sessions() as s:
            versions = dict((await s.execute(select(PayoutTx.txid, PayoutTx.fee_sat).where(
                PayoutTx.batch_id == batch_id))).all())
        for other, fee in versions.items():
            if other == txid:
                continue
            st = await self.backend.transaction(other)
            if st is not None and st.confirmations > 0:
                return other, int(fee), int(versions.get(txid, 0))
        return None

    async def _reversed(self, txid: str, vout: int) -> bool:
        """Whether the chain watcher found our coin ``txid:vout`` gone: its transaction left
        the chain and neither came back nor waits in the node's mempool (``conflicted``; its
        credit reversed, or handed to a person when already spent)."""
        async with self.sessions() as s:
            return (await s.execute(select(OnchainPayment.id).where(
                OnchainPayment.txid == txid, OnchainPayment.vout == vout,
                OnchainPayment.status == OnchainPaymentStatus.CONFLICTED))).first() is not None

    async def _refused(self, batch_id: str, txid: str, exc: TxRejected,
                       coins: list[tuple[str, int]], report: WatchReport) -> None:
        for coin_txid, vout, spent_elsewhere in await missing_inputs(self.backend, coins):
            if not spent_elsewhere:
                if await self._reversed(coin_txid, vout):
                    # Found from outside: the coin's own transaction left the chain for good
                    # (the watcher reversed the deposit or funding that paid it), and the
                    # move waited forever with a warning in the log.
                    why = (f"reorged out of the chain after it was booked, and input "
                           f"{coin_txid}:{vout} went with it: the transaction that paid it "
                           f"left the chain and the chain watcher took its credit back "
                           f"({exc.reason}). It cannot confirm as booked; the ledger still "
                           "counts it and what it paid still reads as paid: a person decides")
                    await retrying(self.sessions, partial(
                        self.tell, batch_id=batch_id, kind="payout_reorged_conflict",
                        why=why))
                    report.conflicts += 1
                    log.error("move_reorged_input_reversed", batch=batch_id, txid=txid,
                              coin=f"{coin_txid}:{vout}", reason=exc.reason)
                    return
                # The coin's own transaction is gone too: a move of ours reorged out with it
                # (sent again before this one, oldest first), or a deposit the chain watcher
                # has not settled yet. This move waits for it.
                log.warning("move_reorged_input_missing", batch=batch_id, txid=txid,
                            coin=f"{coin_txid}:{vout}", reason=exc.reason)
                return
            sibling = await self._sibling_in_chain(batch_id, txid)
            if sibling is not None and await retrying(self.sessions, partial(
                    self._rebook, batch_id=batch_id, booked=txid, other=sibling[0])):
                report.rebooked += 1
                return
            if sibling is not None:
                # Found from outside: the "other transaction" was the move's own earlier (or
                # later) version, and the item did not say so.
                other, other_fee, booked_fee = sibling
                why = (f"reorged out of the chain after it was booked, and its own version "
                       f"{other} (fee {other_fee} sat; the booked one's is {booked_fee} sat) "
                       f"confirmed in its place: what it pays is paid, but the books, the "
                       f"withdrawals' txid and fee and the change coin still name {txid}. A "
                       "person adjusts them; no command does it yet")
            else:
                why = (f"reorged out of the chain after it was booked, and input "
                       f"{coin_txid}:{vout} is now spent by another transaction "
                       f"({exc.reason}): it cannot confirm as booked. The ledger still counts "
                       "it; a person decides")
            await retrying(self.sessions, partial(
                self.tell, batch_id=batch_id, kind="payout_reorged_conflict", why=why))
            report.conflicts += 1
            log.error("move_reorged_conflict", batch=batch_id, txid=txid,
                      coin=f"{coin_txid}:{vout}", reason=exc.reason)
            return
        why = (f"reorged out of the chain after it was booked, and its rebroadcast refused "
               f"({exc.reason}) with every input unspent: sent again at every pass")
        await retrying(self.sessions, partial(
            self.tell, batch_id=batch_id, kind="payout_reorged_rejected", why=why))
        report.errors.append(f"{batch_id}: {why}")
        log.error("move_reorged_rebroadcast_rejected", batch=batch_id, txid=txid,
                  reason=exc.reason)
