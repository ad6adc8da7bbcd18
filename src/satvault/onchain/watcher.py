"""The chain watcher: follows blocks and the mempool, records every output paying one of our
scripts exactly once (keyed on txid:vout), and moves money in the ledger as payments progress.

One ``step()`` is a full reconciliation and is safe to run at any time, any number of times
(ZMQ notifications or a timer merely call it sooner):

1. **Reorgs.** Stored block hashes are compared with the node's from our tip down; blocks above
   the fork point are disconnected and their payments go back to ``mempool``.
2. **Blocks.** Each new block is scanned (a dict lookup per output) and recorded with its
   payments in one transaction; ``chain_blocks`` is the cursor, so a restart resumes from the
   last processed block and misses nothing.
3. **Mempool.** New mempool transactions are scanned the same way.
4. **Vanished.** An unconfirmed payment whose transaction is neither in the mempool nor in a
   block (replaced by fee, double-spent, dropped by a reorg) becomes ``conflicted`` and stops
   counting; a replacement paying us is a new payment and counts instead.
5. **Ledger.** A payment seen is an incoming *hold* (the wallet shows it as pending); with the
   required confirmations the hold is *posted*; a conflicted payment's hold is *voided*; a
   payment credited and then conflicted is *reversed* by a compensating transfer, or flagged
   for review when the money was already spent. Transfer ids derive from txid:vout, so every
   ledger move happens at most once however often a step repeats.
6. **Screening.** With a ``deposit_screen`` (the composition root wires the risk rules), a
   customer's deposit is screened in the unit of work that credits it, with the addresses
   that paid it (read from the node before that unit of work opens): approved, the hold is
   posted as usual; held back, the hold is voided and the money credited to the wallet's
   frozen sub-balance instead, from which a reorg also reverses it.
7. **Our own move addresses.** A payment to a change, sweep or refill address made by one of
   our moves is booked by the payout job with that move, never here. Such an address is public
   once used, though, and anyone may pay it: a transaction that spends none of our coins (every
   move of ours does) is marked ``paid_from_outside`` when first recorded and then goes through
   step 5 like an operator's funding of that tier (equity → the tier's account), so the coin
   the payout job may spend is on the books.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import String, delete, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.frozen import DepositScreen, IncomingDeposit
from satvault.accounts.models import Wallet
from satvault.audit.service import record as audit_record
from satvault.backends.base import Block, ChainBackend, Tx
from satvault.db import utcnow
from satvault.kernel.retrying import retrying
from satvault.ledger.core import Result, TransferKind, TransferSpec
from satvault.ledger.platform import ensure_platform_accounts, platform_fee
from satvault.ledger.store import create_transfers, lookup_transfer
from satvault.logs import get_logger
from satvault.onchain.models import (
    COINBASE_MATURITY,
    INTERNAL_PURPOSES,
    AddressStatus,
    ChainBlock,
    CreditState,
    DepositRequest,
    OnchainAddress,
    OnchainPayment,
    OnchainPaymentStatus,
    OnchainWallet,
    ReviewItem,
)
from satvault.onchain.senders import sending_addresses
from satvault.onchain.service import top_up_pool, watched_scripts
from satvault.telemetry import PAYMENTS_RECEIVED

__all__ = ["Match", "StepReport", "Watcher", "scan_block", "scan_txs"]

log = get_logger(__name__)
# The review item of a spent credit a reorg could not take back.
_UNFUNDED = "deposit_reversal_unfunded"
# How the freeze such a reversal puts on its wallet begins: the system lifts only its own.
_UNFUNDED_FREEZE = "a deposit the chain took back was already spent:"
# Brings a store invoice's status up to date in the transaction that credits its payment
# (the composition root passes ``invoices.service.apply_payment``): session, invoice id.
StoreInvoiceHook = Callable[[AsyncSession, str], Awaitable[object]]
MSAT = 1000


@dataclass(frozen=True, slots=True)
class Match:
    txid: str
    vout: int
    value_sat: int
    script_pubkey: bytes
    address_id: int
    is_coinbase: bool = False  # spendable, so credited, only at COINBASE_MATURITY


def scan_txs(txs: Iterable[Tx], scripts: dict[bytes, int]) -> list[Match]:
    """Outputs paying a watched script. One dict lookup per output, nothing else."""
    found = []
    get = scripts.get
    for tx in txs:
        for n, out in enumerate(tx.outputs):
            aid = get(out.script_pubkey)
            if aid is not None and out.value_sat > 0:
                found.append(Match(tx.txid, n, out.value_sat, out.script_pubkey, aid,
                                   tx.is_coinbase))
    return found


def scan_block(block: Block, scripts: dict[bytes, int]) -> list[Match]:
    return scan_txs(block.txs, scripts)


@dataclass
class StepReport:
    tip: int = 0
    blocks: int = 0
    disconnected: int = 0
    new_payments: int = 0
    conflicted: int = 0
    ledger_moves: int = 0
    reviews: int = 0
    errors: list[str] = field(default_factory=list)


class Watcher:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: ChainBackend, *,
                 zero_conf_max_sat: int = 100_000, initial_rescan: int = 6,
                 start_height: int | None = None, max_reorg_depth: int = 100,
                 invoice_fee_bp: int = 0,
                 on_store_invoice: StoreInvoiceHook | None = None,
                 deposit_screen: DepositScreen | None = None, network: str = "bitcoin",
                 max_sender_lookups: int = 20) -> None:
        self.sessions = sessions
        self.on_store_invoice = on_store_invoice
        self.deposit_screen = deposit_screen
        self.network = network
        self.max_sender_lookups = max_sender_lookups
        self.backend = backend
        self.zero_conf_max_sat = zero_conf_max_sat
        self.initial_rescan = initial_rescan
        self.start_height = start_height
        self.max_reorg_depth = max_reorg_depth
        self.invoice_fee_bp = invoice_fee_bp
        self._scripts: dict[bytes, int] = {}
        self._scripts_version: tuple[int, int] = (-1, -1)
        self._mempool_seen: set[str] = set()
        self.wake = asyncio.Event()

    # ------------------------------------------------------------------------- helpers
    async def _refresh_scripts(self, session: AsyncSession) -> None:
        count, top = (int(v) for v in (await session.execute(
            select(func.count(OnchainAddress.id), func.coalesce(func.max(OnchainAddress.id), 0))
        )).one())
        if (count, top) == self._scripts_version:
            return
        old_count, old_top = self._scripts_version
        if old_count >= 0:
            # Addresses are only ever added and their scripts never change, so the rows past
            # the last id seen are usually all that is new. They are only if the counts agree:
            # a row with a lower id committed late (PostgreSQL hands out ids before commit)
            # makes them disagree, and then the whole set is read again.
            rows = (await session.execute(
                select(OnchainAddress.script_pubkey, OnchainAddress.id)
                .where(OnchainAddress.id > old_top))).all()
            if old_count + len(rows) == count and max((r.id for r in rows), default=top) == top:
                self._scripts.update({bytes.fromhex(r.script_pubkey): r.id for r in rows})
                self._scripts_version = (count, top)
                return
        self._scripts = await watched_scripts(session)
        self._scripts_version = (count, top)

    async def _our_outpoints(self, session: AsyncSession) -> dict[tuple[str, int], int]:
        rows = await session.execute(
            select(OnchainPayment.txid, OnchainPayment.vout, OnchainPayment.id)
            .where(OnchainPayment.spent_by.is_(None),
                   OnchainPayment.status != OnchainPaymentStatus.CONFLICTED))
        return {(t, v): i for t, v, i in rows}

    async def _record(self, session: AsyncSession, matches: list[Match], txs: Iterable[Tx],
                      block: Block | None) -> int:
        """Insert new payments, (re)confirm known ones, mark our outputs spent. Returns #new."""
        new = 0
        now = utcnow()
        txs = list(txs)
        to_moves: list[OnchainPayment] = []  # new, paid to an address our moves pay
        for m in matches:
            row = (await session.execute(select(OnchainPayment).where(
                OnchainPayment.txid == m.txid, OnchainPayment.vout == m.vout))
            ).scalar_one_or_none()
            if row is None:
                addr = await session.get(OnchainAddress, m.address_id)
                assert addr is not None
                wallet_id, required = await self._beneficiary(session, addr)
                if m.is_coinbase:  # credited no sooner than it can be spent
                    required = max(required, COINBASE_MATURITY)
                row = OnchainPayment(
                    txid=m.txid, vout=m.vout, address_id=m.address_id,
                    script_pubkey=m.script_pubkey.hex(), value_sat=m.value_sat,
                    status=OnchainPaymentStatus.MEMPOOL, request_id=addr.request_id,
                    wallet_id=wallet_id, required_confirmations=required,
                    credit_state=CreditState.NONE, hold_generation=0,
                    is_coinbase=m.is_coinbase, first_seen_at=now, updated_at=now)
                session.add(row)
                if addr.purpose in INTERNAL_PURPOSES:
                    to_moves.append(row)
                elif wallet_id is None:
                    role = (await session.execute(select(OnchainWallet.role).where(
                        OnchainWallet.id == addr.wallet_id))).scalar_one()
                    if role == "deposit":  # nobody was given this address: a person decides
                        session.add(ReviewItem(
                            kind="deposit_unassigned", subject=f"{m.txid}:{m.vout}",
                            details=json.dumps({"address": addr.address, "sat": m.value_sat}),
                            created_at=now))
                if not addr.ever_received:
                    addr.ever_received = True
                    addr.status = AddressStatus.USED
                new += 1
            if block is not None:
                row.status, row.block_hash, row.block_height = \
                    OnchainPaymentStatus.CONFIRMED, block.hash, block.height
                row.updated_at = now
            elif row.status == OnchainPaymentStatus.CONFLICTED:
                # It came back (e.g. rebroadcast).
                row.status, row.updated_at = OnchainPaymentStatus.MEMPOOL, now
        await session.flush()
        if to_moves:
            await self._mark_paid_from_outside(session, to_moves, txs)
        ours = await self._our_outpoints(session)
        for tx in txs:
            for op in tx.inputs:
                pid = ours.get((op.txid, op.vout))
                if pid is not None:
                    await session.execute(update(OnchainPayment).where(OnchainPayment.id == pid)
                                          .values(spent_by=tx.txid, updated_at=now))
        return new

    @staticmethod
    async def _mark_paid_from_outside(session: AsyncSession, rows: list[OnchainPayment],
                                      txs: list[Tx]) -> None:
        """Which of these new payments to our move addresses (change, sweep, refill) someone
        else made. Every move of ours spends coins recorded here (confirmed ones, so recorded
        by now: the payments just flushed included), and nobody else can spend them; so a
        transaction spending none of them is no move of ours. Read from the transaction's
        inputs, not from ``spent_by``: that names the first version of a move seen, and a fee
        bump's replacement spends the same coins."""
        by_txid = {tx.txid: tx for tx in txs}
        parents = {op.txid for row in rows for op in by_txid[row.txid].inputs}
        ours: set[tuple[str, int]] = set()
        if parents:
            ours = {(t, int(v)) for t, v in (await session.execute(
                select(OnchainPayment.txid, OnchainPayment.vout)
                .where(OnchainPayment.txid.in_(parents)))).all()}
        for row in rows:
            if not any((op.txid, op.vout) in ours for op in by_txid[row.txid].inputs):
                row.paid_from_outside = True
                log.warning("move_address_paid_from_outside", payment=f"{row.txid}:{row.vout}",
                            sat=row.value_sat)

    async def _beneficiary(self, session: AsyncSession, addr: OnchainAddress
                           ) -> tuple[str | None, int]:
        """Which satvault wallet a payment to this address belongs to, and its confirmations."""
        if addr.request_id:
            req = await session.get(DepositRequest, addr.request_id)
            if req is not None:
                return req.wallet_id, req.required_confirmations
        if addr.owner_type in ("user", "merchant") and addr.owner_id:
            wallet = (await session.execute(select(Wallet).where(
                Wallet.owner_type == addr.owner_type, Wallet.owner_id == addr.owner_id,
                Wallet.asset == "BTC"))).scalar_one_or_none()
            if wallet is not None:
                return wallet.id, 1
        return None, 1

    # ---------------------------------------------------------------------------- step
    async def step(self) -> StepReport:
        report = StepReport()
        # Keep the deposit address pool deep (here, not in a request): a claim then costs one
        # statement, and the new addresses are watched from this step on.
        await retrying(self.sessions, lambda s: top_up_pool(s))
        tip = await self.backend.tip()
        report.tip = tip.height
        async with self.sessions() as s:
            stored = (await s.execute(select(ChainBlock.height, ChainBlock.hash)
                                      .order_by(ChainBlock.height.desc())
                                      .limit(self.max_reorg_depth))).all()
        if stored:
            fork = await self._find_fork(stored, tip.height)
            if fork < stored[0].height:
                report.disconnected = await retrying(self.sessions,
                                                     lambda s: self._disconnect(s, fork))
            height = fork + 1
        else:
            height = self.start_height if self.start_height is not None else max(
                0, tip.height - self.initial_rescan + 1)
        while height <= tip.height:
            block = await self.backend.block(await self.backend.block_hash(height))
            ok, n = await retrying(self.sessions, partial(self._connect, block=block))
            if not ok:  # the chain moved under us; the next step sees the reorg
                break
            report.blocks += 1
            report.new_payments += n
            height += 1
        report.new_payments += await self._scan_mempool()
        report.conflicted = await self._find_vanished(tip.height)
        moves, reviews = await self._settle(tip.height)
        report.ledger_moves, report.reviews = moves, reviews
        return report

    async def _find_fork(self, stored: Sequence[Any], tip_height: int) -> int:
        """The highest stored block still on the node's best chain.

        Only a verified difference disconnects a block: the node names another hash at that
        height, or its chain is no longer that long. A failed call proves nothing, so it
        propagates and aborts the whole step (retried at the next one) — a node outage taken
        for a deep reorg would send confirmed payments back to the mempool."""
        for height, our_hash in stored:
            if height > tip_height:
                continue  # the node's best chain is shorter: this block is not on it
            theirs = await self.backend.block_hash(height)
            if theirs == our_hash:
                return int(height)
        oldest = int(stored[-1].height)
        log.error("reorg_deeper_than_tracked", depth=len(stored))
        return oldest - 1

    async def _disconnect(self, session: AsyncSession, fork: int) -> int:
        hashes = (await session.execute(select(ChainBlock.hash).where(ChainBlock.height > fork))
                  ).scalars().all()
        await session.execute(
            update(OnchainPayment).where(OnchainPayment.block_height > fork)
            .values(status=OnchainPaymentStatus.MEMPOOL, block_hash=None, block_height=None,
                    updated_at=utcnow()))
        await session.execute(delete(ChainBlock).where(ChainBlock.height > fork))
        log.warning("reorg", fork_height=fork, disconnected=len(hashes))
        return len(hashes)

    async def _connect(self, session: AsyncSession, *, block: Block) -> tuple[bool, int]:
        prev = (await session.execute(select(ChainBlock.hash).where(
            ChainBlock.height == block.height - 1))).scalar_one_or_none()
        if prev is not None and prev != block.prev_hash:
            return False, 0
        await self._refresh_scripts(session)
        matches = scan_block(block, self._scripts)
        n = await self._record(session, matches, block.txs, block)
        session.add(ChainBlock(height=block.height, hash=block.hash, prev_hash=block.prev_hash,
                               processed_at=utcnow()))
        return True, n

    async def _scan_mempool(self) -> int:
        txids = await self.backend.mempool_txids()
        fresh = [t for t in txids if t not in self._mempool_seen]
        self._mempool_seen &= txids
        if not fresh:
            return 0
        txs = []
        for txid in fresh:
            status = await self.backend.transaction(txid)
            if status is not None:
                txs.append(status.tx)
        async def work(s: AsyncSession) -> int:
            await self._refresh_scripts(s)
            return await self._record(s, scan_txs(txs, self._scripts), txs, None)
        n = await retrying(self.sessions, work)
        self._mempool_seen.update(fresh)
        return n

    async def _find_vanished(self, tip_height: int) -> int:
        async with self.sessions() as s:
            pending = (await s.execute(select(OnchainPayment.id, OnchainPayment.txid).where(
                OnchainPayment.status == OnchainPaymentStatus.MEMPOOL))).all()
        if not pending:
            return 0
        mempool = await self.backend.mempool_txids()
        gone = []
        for pid, txid in pending:
            if txid in mempool:
                continue
            status = await self.backend.transaction(txid)
            if status is None:
                gone.append(pid)
        if gone:
            async def work(s: AsyncSession) -> None:
                await s.execute(update(OnchainPayment).where(
                    OnchainPayment.id.in_(gone),
                    OnchainPayment.status == OnchainPaymentStatus.MEMPOOL)
                    .values(status=OnchainPaymentStatus.CONFLICTED, updated_at=utcnow()))
            await retrying(self.sessions, work)
            log.warning("payments_conflicted", count=len(gone))
        return len(gone)

    # -------------------------------------------------------------------------- ledger
    async def _settle(self, tip_height: int) -> tuple[int, int]:
        async with self.sessions() as s:
            P, A = OnchainPayment, OnchainAddress
            open_rows = (await s.execute(select(
                P.id, P.txid, P.wallet_id, P.status, P.credit_state, P.block_height,
                P.required_confirmations, P.value_sat).join(A, A.id == P.address_id).where(
                A.purpose.is_(None) | A.purpose.not_in(INTERNAL_PURPOSES)
                | P.paid_from_outside,
            ).where(
                ((P.credit_state.in_((CreditState.NONE, CreditState.REVERSED)))
                 & (P.status != OnchainPaymentStatus.CONFLICTED))
                | (P.credit_state == CreditState.PENDING)
                | ((P.credit_state == CreditState.CREDITED)
                   & (P.status == OnchainPaymentStatus.CONFLICTED))
                # A spent credit that could not be reversed, whose transaction is back.
                | ((P.credit_state == CreditState.REVIEW)
                   & (P.status != OnchainPaymentStatus.CONFLICTED))
            ).order_by(P.id))).all()
        moves = reviews = 0
        senders: dict[str, tuple[str, ...]] = {}
        for row in open_rows:
            if self.deposit_screen is not None and row.wallet_id is not None \
                    and row.txid not in senders and self._credits_now(row, tip_height):
                # A customer's deposit about to be credited: who paid it, asked of the node
                # now, before the unit of work that screens and credits it opens.
                senders[row.txid] = await sending_addresses(
                    self.backend, row.txid, network=self.network,
                    max_inputs=self.max_sender_lookups)
            counted: list[str] = []
            m, r = await retrying(self.sessions, partial(
                self._settle_one, pid=row.id, tip_height=tip_height,
                senders=senders.get(row.txid), counted=counted))
            for outcome in counted:  # committed: the deposit metric
                PAYMENTS_RECEIVED.labels("onchain", outcome).inc()
            moves += m
            reviews += r
        return moves, reviews

    def _credits_now(self, row: Any, tip_height: int) -> bool:
        """Whether settling this payment (as read) credits it: not conflicted, not credited
        yet, with enough confirmations (the same test as :meth:`_settle_one`)."""
        if row.status == OnchainPaymentStatus.CONFLICTED or row.credit_state not in (
                CreditState.NONE, CreditState.PENDING, CreditState.REVERSED):
            return False
        confs = tip_height - row.block_height + 1 if row.block_height is not None else 0
        return bool(confs >= row.required_confirmations
                    and (confs > 0 or row.value_sat <= self.zero_conf_max_sat))

    async def _settle_one(self, session: AsyncSession, *, pid: int, tip_height: int,
                          senders: tuple[str, ...] | None = None,
                          counted: list[str] | None = None) -> tuple[int, int]:
        """``counted`` receives what this unit of work did for the deposit metric
        (``credited``, ``reversed``), reset at each attempt."""
        if counted is not None:
            counted.clear()
        found = await self._read_for_settling(session, pid)
        if found is None:
            return 0, 0
        p, purpose, role, wallet_account, store_invoice_id, owner, address = found
        if purpose in INTERNAL_PURPOSES and not p.paid_from_outside:
            return 0, 0  # a move between our own wallets: booked with the move
        platform = await ensure_platform_accounts(session, "BTC")
        # The tier the coin sits in: customers' deposits, the semi-cold (hot) wallet, cold.
        asset_account = {"deposit": platform.deposit_wallet.id, "cold": platform.cold_wallet.id
                         }.get(role, platform.hot_wallet.id)
        # Unassigned deposits and direct tier funding (an operator's, or anyone's payment to
        # a change, sweep or refill address).
        credit_account = platform.equity.id
        if p.wallet_id is not None:
            assert wallet_account is not None
            credit_account = wallet_account
        base = f"oc:in:{p.txid}:{p.vout}"
        key = base if p.hold_generation == 0 else f"{base}:g{p.hold_generation}"
        amount = p.value_sat * MSAT
        confs = tip_height - p.block_height + 1 if p.block_height is not None else 0
        enough = confs >= p.required_confirmations and (
            confs > 0 or p.value_sat <= self.zero_conf_max_sat)
        if enough and confs == 0 and p.wallet_id is not None \
                and p.status != OnchainPaymentStatus.CONFLICTED:
            enough = await self._zero_conf_room(session, p)
        specs: list[TransferSpec] = []
        next_state = p.credit_state
        invoice_id: str | None = None
        if p.status == OnchainPaymentStatus.CONFLICTED:
            if p.credit_state == CreditState.PENDING:
                specs = [TransferSpec(f"{key}:void", kind=TransferKind.VOID, pending_id=key)]
                next_state = CreditState.NONE
                p.hold_generation += 1
            elif p.credit_state == CreditState.CREDITED:
                if self.deposit_screen is not None and p.wallet_id is not None:
                    # Still frozen: the money is taken back from the frozen sub-balance.
                    held = await self.deposit_screen.unwind(session, credit_id=key)
                    credit_account = held if held is not None else credit_account
                done = await self._reverse(session, p, key, amount, credit_account,
                                           asset_account)
                if counted is not None and done[0]:
                    counted.append("reversed")
                return done
        else:
            if p.credit_state == CreditState.REVIEW:
                # Reorged out after its money was spent, so never reversed (review), and now
                # back (found from outside: it stayed in review for good, never swept, and
                # its item kept saying the money was lost). The credit never left the
                # wallet: it is credited as before, with no ledger move, and the item closed.
                await self._back_from_review(session, p)
                return 0, 0
            if p.credit_state == CreditState.REVERSED:  # reversed after a reorg, and it is back
                p.hold_generation += 1
                key = f"{base}:g{p.hold_generation}"
                p.credit_state = CreditState.NONE
            held_now = p.credit_state == CreditState.NONE  # its hold is made in this batch
            if held_now:
                specs.append(TransferSpec(key, asset_account, credit_account, amount,
                                          "BTC", kind=TransferKind.PENDING, code="deposit",
                                          ref=f"{p.txid}:{p.vout}"))
                next_state = CreditState.PENDING
            screening = self.deposit_screen is not None and p.wallet_id is not None
            if screening and senders is None:
                enough = False  # its senders were not read before this unit of work: next step
            if enough and next_state in (CreditState.NONE, CreditState.PENDING):
                invoice_id = store_invoice_id
                fee = platform_fee(amount, self.invoice_fee_bp) if invoice_id else 0
                frozen = None
                if screening:
                    assert self.deposit_screen is not None and owner is not None
                    frozen = await self.deposit_screen.screen(session, IncomingDeposit(
                        wallet_id=str(p.wallet_id), ledger_account_id=credit_account,
                        owner_type=owner[0], owner_id=owner[1], amount_msat=amount,
                        rail="onchain", subject_id=f"{p.txid}:{p.vout}", credit_id=key,
                        receiving=address, senders=senders or (), fee_msat=fee,
                        store_invoice_id=invoice_id))
                if frozen is not None:
                    # Held back by the risk rules: the hold on the wallet is voided and the
                    # money credited to its frozen sub-balance (the reversal's source too).
                    if held_now:
                        specs.pop()  # no hold to void: it was never made
                    else:
                        specs.append(TransferSpec(f"{key}:void", kind=TransferKind.VOID,
                                                  pending_id=key))
                    credit_account = frozen
                    specs.append(TransferSpec(f"{key}:frozen", asset_account, credit_account,
                                              amount, "BTC", code="deposit_frozen",
                                              ref=f"{p.txid}:{p.vout}", linked=fee > 0))
                else:
                    # Naming the hold's accounts spares the ledger reading them first.
                    specs.append(TransferSpec(f"{key}:post", asset_account, credit_account,
                                              kind=TransferKind.POST, pending_id=key,
                                              code="deposit", linked=fee > 0))
                if fee:  # a store invoice's platform fee, in the same linked batch
                    specs.append(TransferSpec(f"{key}:fee", credit_account,
                                              platform.fee_account(key).id, fee, "BTC",
                                              code="invoice_fee", ref=invoice_id or ""))
                next_state = CreditState.CREDITED
        if not specs:
            return 0, 0
        outcomes = await create_transfers(session, specs)
        bad = [o for o in outcomes if not o.ok]
        if bad:
            raise RuntimeError(f"ledger refused deposit moves for {key}: {bad}")
        created = sum(o.result is Result.CREATED for o in outcomes)
        if counted is not None and next_state == CreditState.CREDITED \
                and p.credit_state != CreditState.CREDITED:
            counted.append("credited")
        p.credit_state, p.updated_at = next_state, utcnow()
        if invoice_id and next_state == CreditState.CREDITED and self.on_store_invoice is not None:
            await self.on_store_invoice(session, invoice_id)  # settled with its credit
        if created:
            log.info("deposit_ledger", payment=f"{p.txid}:{p.vout}", state=next_state,
                     sat=p.value_sat, confirmations=confs)
        return created, 0

    async def _zero_conf_room(self, session: AsyncSession, p: OnchainPayment) -> bool:
        """Whether crediting ``p`` unconfirmed keeps what its wallet holds credited but
        unconfirmed within ``zero_conf_max_sat``. The limit bounds what a double spend can
        take back, so it counts per wallet: per output, a payment split into outputs or
        transactions of the limit each was credited whole from the mempool (found from
        outside: spent over Lightning, then double-spent, the reversals found nothing). The
        watcher is a singleton (one lease), so no other step credits meanwhile."""
        P = OnchainPayment
        unconfirmed = int((await session.execute(
            select(func.coalesce(func.sum(P.value_sat), 0)).where(
                P.credit_state == CreditState.CREDITED,
                P.status.in_((OnchainPaymentStatus.MEMPOOL, OnchainPaymentStatus.CONFLICTED)),
                P.wallet_id == p.wallet_id, P.id != p.id))).scalar_one())
        return unconfirmed + p.value_sat <= self.zero_conf_max_sat

    async def _read_for_settling(self, session: AsyncSession, pid: int
                                 ) -> tuple[OnchainPayment, str | None, str, int | None,
                                            str | None, tuple[str, str] | None, str] | None:
        """The payment, locked, with what settling it needs, in one statement: its address's
        purpose, the role of the wallet it was paid to (the tier), its beneficiary's ledger
        account, and the store invoice it pays when a fee is charged on it or its status is set
        with the credit."""
        P, A, D = OnchainPayment, OnchainAddress, DepositRequest
        q = select(P, A.purpose, OnchainWallet.role, Wallet.ledger_account_id,
                   Wallet.owner_type, Wallet.owner_id, A.address) \
            .join(A, A.id == P.address_id).join(OnchainWallet, OnchainWallet.id == A.wallet_id) \
            .outerjoin(Wallet, Wallet.id == P.wallet_id)
        if self.invoice_fee_bp or self.on_store_invoice is not None:
            q = q.add_columns(D.store_invoice_id).outerjoin(
                D, (D.id == P.request_id) & P.request_id.is_not(None))
        else:
            q = q.add_columns(literal(None, String()))
        row = (await session.execute(q.where(P.id == pid).with_for_update(of=P))).one_or_none()
        if row is None:
            return None
        v: tuple[Any, ...] = tuple(row)
        owner = (v[4], v[5]) if v[4] is not None else None
        return v[0], v[1], v[2], v[3], v[7], owner, v[6]

    async def _reverse(self, session: AsyncSession, p: OnchainPayment, key: str, amount: int,
                       credit_account: int, asset_account: int) -> tuple[int, int]:
        specs = []
        fee_id = f"{key}:fee"
        fee = await lookup_transfer(session, fee_id)
        if fee is not None:  # give the platform fee back with the credit it came from
            # The fee's own ref (its invoice), so a merchant matching statement lines to
            # invoices finds the reversal too (found from outside: it had none).
            specs.append(TransferSpec(f"{fee_id}:reverse", fee.credit_account_id,
                                      fee.debit_account_id, fee.amount, "BTC",
                                      code="invoice_fee_reversal", ref=fee.ref, linked=True))
        specs.append(TransferSpec(
            f"{key}:reverse", credit_account, asset_account, amount, "BTC",
            code="deposit_reversal",
            ref=f"{p.txid}:{p.vout}"))
        outcome = (await create_transfers(session, specs))[-1]
        if outcome.ok:
            p.credit_state, p.updated_at = CreditState.REVERSED, utcnow()
            log.warning("deposit_reversed", payment=f"{p.txid}:{p.vout}", sat=p.value_sat)
            return 1, 0
        subject = f"{p.txid}:{p.vout}"
        already = (await session.execute(select(ReviewItem.id).where(
            ReviewItem.kind == _UNFUNDED, ReviewItem.subject == subject,
            ReviewItem.resolved_at.is_(None)))).first()
        if already is None:  # gone, back and gone again: one open item for the one matter
            session.add(ReviewItem(
                kind=_UNFUNDED, subject=subject,
                details=json.dumps({"wallet_id": p.wallet_id, "value_sat": p.value_sat,
                                    "ledger_result": outcome.result.value}),
                created_at=utcnow()))
        p.credit_state, p.updated_at = CreditState.REVIEW, utcnow()
        await self._freeze_for(session, p, subject)
        log.error("deposit_reversal_needs_review", payment=f"{p.txid}:{p.vout}",
                  sat=p.value_sat, result=outcome.result.value)
        return 0, 1

    @staticmethod
    async def _freeze_for(session: AsyncSession, p: OnchainPayment, subject: str) -> None:
        """Freeze the wallet a credit could not be taken back from, until a person decides
        (found from outside: the rest of the wallet stayed spendable, so whoever
        double-spent a deposit they had spent could take that too). Money in is still
        credited; a wallet frozen already keeps its freeze and reason."""
        if p.wallet_id is None:
            return
        w = (await session.execute(select(Wallet).where(Wallet.id == p.wallet_id)
                                   .with_for_update())).scalar_one()
        if w.frozen_at is not None:
            return
        reason = (f"{_UNFUNDED_FREEZE} {subject} ({p.value_sat} sat) could not be reversed; "
                  "see its review item")
        w.frozen_at, w.frozen_reason = utcnow(), reason
        await audit_record(session, actor="system", action="wallet.freeze", object=w.id,
                           after={"reason": reason})

    async def _back_from_review(self, session: AsyncSession, p: OnchainPayment) -> None:
        now = utcnow()
        p.credit_state, p.updated_at = CreditState.CREDITED, now
        subject = f"{p.txid}:{p.vout}"
        await session.execute(update(ReviewItem).where(
            ReviewItem.kind == _UNFUNDED, ReviewItem.subject == subject,
            ReviewItem.resolved_at.is_(None)).values(
                resolved_at=now, resolved_by="system",
                resolution=f"transaction {p.txid} is back on the chain: the credit it "
                           "could not take back stands, and nothing was lost"))
        await self._unfreeze_for(session, p)
        log.warning("deposit_back_from_review", payment=subject, sat=p.value_sat)

    @staticmethod
    async def _unfreeze_for(session: AsyncSession, p: OnchainPayment) -> None:
        """Lift the freeze :meth:`_freeze_for` put on the wallet once none of its credits
        is in review any more; an operator's freeze stays."""
        if p.wallet_id is None:
            return
        w = (await session.execute(select(Wallet).where(Wallet.id == p.wallet_id)
                                   .with_for_update())).scalar_one()
        if w.frozen_at is None or not (w.frozen_reason or "").startswith(_UNFUNDED_FREEZE):
            return
        P = OnchainPayment
        if (await session.execute(select(P.id).where(
                P.wallet_id == w.id, P.credit_state == CreditState.REVIEW, P.id != p.id
        ).limit(1))).first() is not None:
            return
        was, w.frozen_at, w.frozen_reason = w.frozen_reason, None, None
        await audit_record(session, actor="system", action="wallet.unfreeze", object=w.id,
                           after={"reason": f"transaction {p.txid} is back on the chain",
                                  "frozen_for": was})

    # -------------------------------------------------------------------------- running
    async def run(self, interval: float) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watcher_step_failed")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=interval)
