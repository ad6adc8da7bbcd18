"""The three ways, each a list of :class:`Difference`s named row by row.

1. **ledger** — the ledger against itself: :func:`satvault.ledger.check.check_ledger`
   (double entry, balances against their transfers, holds).
2. **records** — the ledger against the record of what happened, exactly once both ways:

   * every on-chain payment's net credit (posted deposit transfers less reversals) is its
     value when the watcher says it is credited, and nothing otherwise; a deposit credit whose
     payment does not exist is a credit with no cause;
   * every paid Lightning invoice has its one credit ``ln:in:<hash>`` of the paid amount, an
     unpaid one has none, and every Lightning credit names an invoice that exists;
   * every withdrawal's hold is in the state its status implies (held while live, posted when
     confirmed, voided when failed or cancelled);
   * every Lightning withdrawal in flight has a live payment attempt, and every live attempt
     belongs to a withdrawal in flight;
   * (deep runs) the audit log's hash chain verifies, and the risk screening's roll-ups
     (PostgreSQL) say what the withdrawals and the folded credits say
     (:func:`satvault.risk.rollups.rollup_drift`).
3. **world** — the ledger against the nodes: each custody tier's coins against its account
   and each held coin at the chain node (:func:`satvault.custody.status.custody_status`);
   recent Lightning invoices and payments at the Lightning node against ours; every payment
   the Lightning node made against our records of payments (one we do not record is money
   that left without a debit: a database restored from an older backup, the node used by
   hand, a key elsewhere); the node's channel balance against the Lightning asset account.

Every statement is an aggregate or an anti-join through indexes; the node calls are made with
no transaction open, at most ``NODE_CONCURRENCY`` at a time, over a bounded recent window.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, and_, case, cast, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from satvault.audit.service import verify as verify_audit
from satvault.backends.base import ChainBackend
from satvault.backends.errors import BackendUnavailable
from satvault.backends.lightning import (
    InvoiceState,
    LightningBackend,
    NodePayment,
    PaymentLister,
    PaymentStatus,
)
from satvault.custody.status import custody_status
from satvault.db import utcnow
from satvault.ledger.check import check_ledger
from satvault.ledger.models import LedgerTransfer
from satvault.lightning.models import LnInvoice, LnInvoiceStatus, LnPayment, LnPaymentStatus
from satvault.logs import get_logger
from satvault.onchain.models import CreditState, OnchainPayment, ReviewItem
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.risk.rollups import rollup_drift

__all__ = ["NODE_CONCURRENCY", "REVIEW_KIND", "Diff", "NodeCursor", "ledger_way", "records_way",
           "world_way"]

log = get_logger(__name__)
MSAT = 1000
NODE_CONCURRENCY = 8
RECENT = timedelta(hours=24)  # how far back the node is asked about invoices and payments
NODE_ROWS = 500  # and at most this many of each, newest first
LIMIT = 200  # differences named per check (a broken database does not flood the report)
NODE_PAGE = 1000  # the node's payments read per call
# The review item a raised difference opens (its subject ``<kind>:<subject>``).
REVIEW_KIND = "reconciliation_difference"


@dataclass(frozen=True, slots=True)
class Diff:
    way: str  # ledger | records | world
    kind: str
    subject: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"way": self.way, "kind": self.kind, "subject": self.subject,
                "detail": self.detail}


# --- 1. the ledger against itself -----------------------------------------------------------

async def ledger_way(session: AsyncSession) -> list[Diff]:
    report = await check_ledger(session)
    out = []
    for p in report.problems:
        rows = list(p.rows)[:LIMIT] or [p.check]
        out += [Diff("ledger", f"ledger_{p.check}", row, p.message) for row in rows]
    return out


# --- 2. the ledger against the record -------------------------------------------------------

_HOLD_STATE = {
    WithdrawalStatus.PENDING: "pending", WithdrawalStatus.AWAITING_APPROVAL: "pending",
    WithdrawalStatus.REVIEW: "pending", WithdrawalStatus.BATCHED: "pending",
    WithdrawalStatus.BROADCAST: "pending", WithdrawalStatus.CONFIRMED: "posted",
    WithdrawalStatus.FAILED: "voided", WithdrawalStatus.CANCELLED: "voided",
}
_UNFINISHED = (LnPaymentStatus.PENDING, LnPaymentStatus.IN_FLIGHT, LnPaymentStatus.UNKNOWN,
               LnPaymentStatus.RETRY)
# A Lightning withdrawal whose money is held and whose payment attempt is live: queued or
# sent, or queued and waiting for its approvers (the payer skips it until they release it;
# found from outside: that state was named a difference at every run).
_IN_FLIGHT = (WithdrawalStatus.PENDING, WithdrawalStatus.AWAITING_APPROVAL,
              WithdrawalStatus.BROADCAST)


async def _deposits(session: AsyncSession) -> list[Diff]:
    T, P = LedgerTransfer, OnchainPayment
    hold, post = aliased(LedgerTransfer), aliased(LedgerTransfer)
    # What a deposit was credited: its hold's posting, or (held back by the risk rules) the
    # credit to the wallet's frozen sub-balance (found from outside: every frozen deposit was
    # reported as a mismatch, and an extra frozen credit went unseen).
    credits = union_all(
        select(hold.ref.label("ref"), post.amount.label("amount"))
        .join(post, post.pending_id == hold.id)
        .where(hold.code == "deposit", hold.id.like("oc:in:%"), post.kind == "post"),
        select(T.ref.label("ref"), T.amount.label("amount"))
        .where(T.code == "deposit_frozen", T.id.like("oc:in:%"))).subquery()
    posted = (select(credits.c.ref.label("ref"), func.sum(credits.c.amount).label("amount"))
              .group_by(credits.c.ref).subquery())
    reversed_ = (select(T.ref.label("ref"), func.sum(T.amount).label("amount"))
                 .where(T.code == "deposit_reversal").group_by(T.ref).subquery())
    ref = P.txid + literal(":") + cast(P.vout, String)
    net = func.coalesce(posted.c.amount, 0) - func.coalesce(reversed_.c.amount, 0)
    expected = case((P.credit_state == CreditState.CREDITED, P.value_sat * MSAT), else_=0)
    rows = (await session.execute(
        select(P.txid, P.vout, P.credit_state, expected, net)
        .outerjoin(posted, posted.c.ref == ref).outerjoin(reversed_, reversed_.c.ref == ref)
        .where(net != expected).order_by(P.id).limit(LIMIT))).all()
    out = [Diff("records", "deposit_credit_mismatch", f"{r[0]}:{r[1]}",
                f"the watcher says {r[2]}: {int(r[3])} msat should be credited, the ledger "
                f"credited {int(r[4])} msat") for r in rows]
    payment = select(P.id).where(posted.c.ref == P.txid + literal(":") + cast(P.vout, String))
    orphans = (await session.execute(
        select(posted.c.ref, posted.c.amount).where(~payment.exists()).limit(LIMIT))).all()
    out += [Diff("records", "credit_without_cause", f"deposit {r[0]}",
                 f"{int(r[1])} msat credited for an on-chain payment satvault has no record "
                 "of") for r in orphans]
    return out


async def _ln_invoices(session: AsyncSession) -> list[Diff]:
    T, Inv = LedgerTransfer, LnInvoice
    credit = aliased(LedgerTransfer)
    rows = (await session.execute(
        select(Inv.id, Inv.status, Inv.paid_msat, credit.amount)
        .outerjoin(credit, credit.id == literal("ln:in:") + Inv.payment_hash)
        .where(or_(and_(Inv.status == LnInvoiceStatus.PAID,
                        or_(credit.id.is_(None), credit.amount != Inv.paid_msat)),
                   and_(Inv.status != LnInvoiceStatus.PAID, credit.id.is_not(None))))
        .order_by(Inv.created_at).limit(LIMIT))).all()
    out = []
    for inv_id, status, paid, amount in rows:
        if status == LnInvoiceStatus.PAID:
            got = "no credit" if amount is None else f"a credit of {int(amount)} msat"
            detail = f"the invoice was paid {int(paid or 0)} msat; the ledger has {got}"
        else:
            detail = f"the invoice is {status}, yet the ledger credited {int(amount)} msat"
        out.append(Diff("records", "ln_invoice_credit_mismatch", inv_id, detail))
    invoice = select(Inv.id).where(Inv.id == T.ref, literal("ln:in:") + Inv.payment_hash == T.id)
    orphans = (await session.execute(
        select(T.id, T.amount).where(T.code.in_(("ln_deposit", "ln_internal")),
                                     ~invoice.exists()).limit(LIMIT))).all()
    out += [Diff("records", "credit_without_cause", r[0],
                 f"{int(r[1])} msat credited for a Lightning invoice satvault has no record "
                 "of") for r in orphans]
    return out


async def _withdrawal_holds(session: AsyncSession) -> list[Diff]:
    W, T = Withdrawal, LedgerTransfer
    expected = case(*((W.status == s, literal(v)) for s, v in _HOLD_STATE.items()),
                    else_=literal("?"))
    rows = (await session.execute(
        select(W.id, W.status, T.state)
        .outerjoin(T, T.id == W.hold_id)
        .where(W.method != WithdrawalMethod.INTERNAL,
               or_(T.id.is_(None), T.state.is_(None), T.state != expected))
        .order_by(W.created_at).limit(LIMIT))).all()
    return [Diff("records", "withdrawal_hold_mismatch", r[0],
                 f"the withdrawal is {r[1]} but its hold is "
                 f"{'missing' if r[2] is None else r[2]} (expected {_HOLD_STATE[r[1]]})")
            for r in rows]


async def _ln_in_flight(session: AsyncSession) -> list[Diff]:
    W, L = Withdrawal, LnPayment
    live = select(L.id).where(L.withdrawal_id == W.id, L.status.in_(_UNFINISHED))
    holds = (await session.execute(
        select(W.id, W.status).where(W.method == WithdrawalMethod.LIGHTNING,
                                     W.status.in_(_IN_FLIGHT), ~live.exists())
        .order_by(W.created_at).limit(LIMIT))).all()
    out = [Diff("records", "ln_hold_without_payment", r[0],
                f"the Lightning withdrawal is {r[1]} (money held) but no payment attempt is "
                "live") for r in holds]
    attempts = (await session.execute(
        select(L.id, L.status, W.id, W.status).join(W, W.id == L.withdrawal_id)
        .where(L.status.in_(_UNFINISHED), W.status.not_in(_IN_FLIGHT))
        .order_by(L.created_at).limit(LIMIT))).all()
    out += [Diff("records", "ln_payment_without_hold", r[0],
                 f"the payment attempt is {r[1]} but its withdrawal {r[2]} is {r[3]}")
            for r in attempts]
    return out


# Kinds only a deep run looks for, and those only a reachable Lightning node tells: a run that
# did not look cannot say they went away (found from outside: every shallow run resolved the
# deep runs' broken audit chain, so it never stayed long enough to be raised to a person).
DEEP_ONLY_KINDS = frozenset({"audit_chain_broken", "risk_rollup_mismatch"})
LN_NODE_KINDS = frozenset({"ln_invoice_not_settled_at_node", "ln_invoice_unrecorded",
                           "ln_payment_failed_but_paid", "ln_payment_succeeded_not_at_node",
                           "ln_payment_unrecorded"})


def unchecked(diffs: list[Diff], *, deep: bool) -> frozenset[str] | None:
    """The kinds of difference a run with these ``diffs`` did not look for (None: the whole
    world way, when the chain node could not be asked)."""
    kinds = {d.kind for d in diffs}
    if "chain_node_unreachable" in kinds:
        return None
    return (frozenset() if deep else DEEP_ONLY_KINDS) | (
        LN_NODE_KINDS if "ln_node_unreachable" in kinds else frozenset())


async def records_way(session: AsyncSession, *, deep: bool) -> list[Diff]:
    out = [*await _deposits(session), *await _ln_invoices(session),
           *await _withdrawal_holds(session), *await _ln_in_flight(session)]
    if deep:
        v = await verify_audit(session)
        if v.broken is not None:
            b = v.broken
            out.append(Diff("records", "audit_chain_broken", f"audit_events.id={b.id}",
                            f"{b.problem} (row seq {b.seq}; expected {b.expected}, found "
                            f"{b.found})"))
        out += [Diff("records", "risk_rollup_mismatch",
                     f"wallet {d.wallet_id} {d.kind} per {d.span}", d.detail)
                for d in await rollup_drift(session, now=utcnow(), limit=LIMIT)]
    return out


# --- 3. the ledger against the nodes --------------------------------------------------------

async def _ln_node(sessions: async_sessionmaker[AsyncSession], lightning: LightningBackend,
                   now: datetime) -> list[Diff]:
    Inv, L = LnInvoice, LnPayment
    since = now - RECENT
    async with sessions() as s:
        invoices = (await s.execute(
            select(Inv.id, Inv.payment_hash, Inv.status, Inv.paid_msat)
            .where(Inv.internal.is_(False),
                   or_(and_(Inv.status == LnInvoiceStatus.PAID, Inv.paid_at >= since),
                       and_(Inv.status.in_((LnInvoiceStatus.OPEN, LnInvoiceStatus.RESERVED,
                                            LnInvoiceStatus.EXPIRED)),
                            Inv.created_at >= since)))
            .order_by(Inv.created_at.desc()).limit(NODE_ROWS))).all()
        # The node keeps one record per hash, the last attempt's; a failed attempt whose
        # hash a later attempt paid is compared through that attempt (found from outside: a
        # retry that succeeded after "no route" made the first attempt "failed but paid" at
        # every run, an incident claiming a refund of money that had left).
        paid_later = aliased(LnPayment)
        payments = (await s.execute(
            select(L.id, L.payment_hash, L.status)
            .where(L.status.in_((LnPaymentStatus.SUCCEEDED, LnPaymentStatus.FAILED)),
                   L.updated_at >= since,
                   ~and_(L.status == LnPaymentStatus.FAILED, select(paid_later.id).where(
                       paid_later.payment_hash == L.payment_hash,
                       paid_later.status == LnPaymentStatus.SUCCEEDED).exists()))
            .order_by(L.updated_at.desc()).limit(NODE_ROWS))).all()
    gate = asyncio.Semaphore(NODE_CONCURRENCY)

    async def invoice(inv_id: str, payment_hash: str, status: LnInvoiceStatus,
                      paid: int | None) -> Diff | None:
        async with gate:
            node = await lightning.lookup_invoice(payment_hash)
        settled = node is not None and node.state == InvoiceState.SETTLED
        if status == LnInvoiceStatus.PAID and not settled:
            state = "unknown to it" if node is None else node.state.value
            return Diff("world", "ln_invoice_not_settled_at_node", inv_id,
                        f"satvault credited {int(paid or 0)} msat; the node says the invoice "
                        f"is {state}")
        if status != LnInvoiceStatus.PAID and settled:
            assert node is not None
            return Diff("world", "ln_invoice_unrecorded", inv_id,
                        f"the node settled {node.paid_msat} msat for it; satvault has it "
                        f"{status} and credited nothing")
        return None

    async def payment(pid: str, payment_hash: str, status: LnPaymentStatus) -> Diff | None:
        async with gate:
            node = await lightning.track_payment(payment_hash)
        if status == LnPaymentStatus.FAILED and node is not None \
                and node.status == PaymentStatus.SUCCEEDED:
            return Diff("world", "ln_payment_failed_but_paid", pid,
                        f"satvault failed the attempt (the hold released) but the node paid "
                        f"{node.amount_msat} msat + {node.fee_msat} msat fee")
        if status == LnPaymentStatus.SUCCEEDED and (
                node is None or node.status == PaymentStatus.FAILED):
            said = "does not know it" if node is None else "says it failed"
            return Diff("world", "ln_payment_succeeded_not_at_node", pid,
                        f"satvault booked the payment as made; the node {said}")
        return None

    found = await asyncio.gather(*(invoice(*r) for r in invoices),
                                 *(payment(*r) for r in payments))
    return [d for d in found if d is not None]


@dataclass
class NodeCursor:
    """Where a reconciliation resumes the Lightning node's payments: each one up to ``after``
    (the node's index) had its record, or a person's resolution, when last read."""

    after: int = 0


def _unrecorded_subject(p: NodePayment) -> str:
    """What a person resolves of a payment no record holds: its hash as it stands, paid or
    still paying (found from outside: one resolved while in flight was never named again
    once it succeeded, 40,000 sat gone with no difference)."""
    return p.payment_hash if p.status == PaymentStatus.SUCCEEDED \
        else f"{p.payment_hash}:in-flight"


async def _ln_node_payments(sessions: async_sessionmaker[AsyncSession],
                            lightning: LightningBackend, cursor: NodeCursor) -> list[Diff]:
    """Every payment the node made from ``cursor`` on that no ``ln_payments`` row records
    (found from outside: an older backup restored over a newer database forgot a paid
    withdrawal, the customer withdrew the same money again, and the reconciliation said
    nothing while the node had liquidity to spare). A failed one moved nothing. One a person
    looked into and resolved (its review item, with the note saying how it was booked) is
    not named again, as it was then: paid, or still paying. Our rows are read after the
    node's list: a payment is recorded before the node is asked to make it."""
    if not isinstance(lightning, PaymentLister):
        return []
    after, stop, out = cursor.after, None, list[Diff]()
    while True:
        page = await lightning.list_payments(after_index=after, limit=NODE_PAGE)
        moved = [p for p in page if p.status != PaymentStatus.FAILED]
        recorded: set[str] = set()
        resolved: set[str] = set()
        if moved:
            async with sessions() as s:
                recorded = set((await s.execute(select(LnPayment.payment_hash).where(
                    LnPayment.payment_hash.in_({p.payment_hash for p in moved})).distinct()
                )).scalars())
                unknown = [_unrecorded_subject(p) for p in moved
                           if p.payment_hash not in recorded]
                if unknown:
                    resolved = {subject.split(":", 1)[1] for subject in (await s.execute(
                        select(ReviewItem.subject).where(
                            ReviewItem.kind == REVIEW_KIND,
                            ReviewItem.resolved_at.is_not(None),
                            ReviewItem.subject.in_(
                                [f"ln_payment_unrecorded:{u}" for u in unknown])))).scalars()}
        for p in page:
            if p.status == PaymentStatus.FAILED or p.payment_hash in recorded \
                    or _unrecorded_subject(p) in resolved:
                continue
            if stop is None:
                stop = p.index - 1  # the next run reads from it again
            if len(out) < LIMIT:
                state = "is paying" if p.status == PaymentStatus.IN_FLIGHT else "paid"
                out.append(Diff("world", "ln_payment_unrecorded", _unrecorded_subject(p),
                                f"the Lightning node {state} {p.amount_msat} msat + "
                                f"{p.fee_msat} msat fee (its payment {p.index}); no payment "
                                "of satvault records it"))
        if page:
            after = max(after, max(p.index for p in page))
        if len(page) < NODE_PAGE:
            break
    cursor.after = after if stop is None else max(cursor.after, stop)
    return out


async def world_way(sessions: async_sessionmaker[AsyncSession], backend: ChainBackend | None,
                    lightning: LightningBackend | None, now: datetime,
                    cursor: NodeCursor | None = None) -> tuple[list[Diff], int | None]:
    """The world's differences and the chain height they were read at. A node that cannot be
    asked is a difference too: what cannot be compared is not known to agree."""
    try:
        status = await custody_status(sessions, backend, lightning)
    except BackendUnavailable as exc:
        return [Diff("world", "chain_node_unreachable", "chain",
                     f"the chain node could not be asked: {exc}")], None
    out = [Diff("world", d.kind, d.subject, d.detail) for d in status.differences]
    if status.lightning is not None:
        local, booked = status.lightning["channel_local_msat"], status.lightning["ledger_msat"]
        if local < booked:
            out.append(Diff("world", "ln_channel_short", "lightning",
                            f"the node's channels hold {local} msat on our side; the ledger's "
                            f"Lightning asset account says {booked} msat"))
    if lightning is not None:
        try:
            out += await _ln_node(sessions, lightning, now)
            out += await _ln_node_payments(sessions, lightning, cursor or NodeCursor())
        except BackendUnavailable as exc:
            out.append(Diff("world", "ln_node_unreachable", "lightning",
                            f"the Lightning node could not be asked: {exc}"))
    return out, status.height
