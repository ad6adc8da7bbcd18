"""The one path every withdrawal takes (the API, invoice refunds, LNURL vouchers aside).

Two halves, so no lock or connection is held while a remote server answers:

1. :func:`prepare_destination`, outside any transaction: the method is inferred from the
   destination; an LNURL or Lightning Address is resolved to a BOLT11 over the network, and
   one of this platform's own invoices is taken off the node;
2. :func:`withdraw`, inside the caller's unit of work: the on-chain or Lightning withdrawal
   is requested (the ledger hold, the row), and the payer woken for a payment the node makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx
from sqlalchemy import ColumnElement, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import Wallet
from satvault.backends.lightning import LightningBackend
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.ids import new_id
from satvault.kernel.tls import default_context
from satvault.ledger.models import LedgerAccount
from satvault.lightning.bolt11check import check_invoice, decode
from satvault.lightning.errors import AmountRequired, PaymentRefused
from satvault.lightning.invoices import StoreInvoiceHook
from satvault.lightning.lnurl import resolve_pay_request
from satvault.lightning.lnurl_service import VoucherWithdrawal
from satvault.lightning.models import InternalRefusal, LnInvoice, LnPayment
from satvault.lightning.payments import (
    REFUSALS_WINDOW,
    OwnInvoice,
    check_payment_size,
    own_bolt11,
    pay_own_invoice,
    refusals_since,
    request_ln_withdrawal,
    take_off_node,
)
from satvault.payouts.models import Withdrawal, WithdrawalMethod, WithdrawalStatus
from satvault.payouts.service import (
    check_onchain_amount,
    request_withdrawal,
    resolve_destination,
)
from satvault.risk import (
    Event,
    Outcome,
    Screening,
    decision_insert,
    record,
    reject_error,
    screen,
)
from satvault.risk.holds import hold_ln_for_review, refuse_while_held
from satvault.withdrawals.policy.approvals import apply_decision
from satvault.withdrawals.policy.service import (
    decide_for,
    initiator_of,
    live_policy,
    refuse_internal_early,
)

__all__ = ["Payer", "PreparedDestination", "destination_kind", "latest_payment",
           "pay_own_screened", "policy_before_node", "prepare_destination", "read_payer",
           "risk_event", "screen_withdrawal", "voucher_withdrawal", "withdraw"]


_ADDRESS = re.compile(r"[a-z0-9._+-]+@[a-z0-9.-]+(:\d{1,5})?")  # LUD-16, optional port


def destination_kind(destination: str) -> str:
    """bolt11 | lnurl | onchain — the method is inferred from the destination."""
    text = destination.strip().lower()
    if text.startswith("lightning:"):
        text = text[len("lightning:"):]
    if text.startswith(("lnbcrt", "lnbc", "lntbs", "lntb")):
        return "bolt11"
    if text.startswith(("lnurl", "lnurlp://")) or _ADDRESS.fullmatch(text) \
            or (text.startswith("https://") and "lightning=lnurl" in text):
        return "lnurl"
    return "onchain"


async def latest_payment(session: AsyncSession, withdrawal_id: str) -> LnPayment | None:
    return (await session.execute(select(LnPayment).where(
        LnPayment.withdrawal_id == withdrawal_id).order_by(LnPayment.attempt.desc()).limit(1)
    )).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class Payer:
    """What :func:`read_payer` found: the wallet (None if there is none with that id), the
    destination if it is one of our own invoices, and the caller's extra columns."""

    wallet: Wallet | None
    own: OwnInvoice | None
    also: tuple[Any, ...]


_payer_statements: dict[int, tuple[tuple[ColumnElement[Any], ...], Any]] = {}


def _payer_statement(also: tuple[ColumnElement[Any], ...]) -> Any:
    """:func:`read_payer`'s SELECT with ``also``'s columns, built once per ``also`` (kept by
    identity: a caller passes the same tuple, built once with bound parameters, every
    time). Its own parameters: ``p_wallet``, ``p_bolt11``, ``p_refused_since``."""
    known = _payer_statements.get(id(also))
    if known is not None and known[0] is also:
        return known[1]
    account = LedgerAccount
    free = select(account.credits_posted - account.debits_posted - account.debits_pending
                  ).where(account.id == Wallet.ledger_account_id).scalar_subquery()
    refused = refusals_since(Wallet.id, bindparam("p_refused_since",
                                                  type_=InternalRefusal.at.type))
    stmt = (select(Wallet, LnInvoice.payment_hash, LnInvoice.bolt11, LnInvoice.wallet_id,
                   LnInvoice.status, LnInvoice.amount_msat, LnInvoice.expires_at, free,
                   refused, *also)
            .outerjoin(LnInvoice, LnInvoice.bolt11 == bindparam("p_bolt11",
                                                                type_=LnInvoice.bolt11.type))
            .where(Wallet.id == bindparam("p_wallet", type_=Wallet.id.type)))
    if len(_payer_statements) < 16:  # callers pass constants; a stray one is not kept
        _payer_statements[id(also)] = (also, stmt)
    return stmt


async def read_payer(session: AsyncSession, *, wallet_id: str, destination: str,
                     also: tuple[ColumnElement[Any], ...] = (),
                     also_params: Mapping[str, Any] | None = None) -> Payer:
    """The paying wallet and, if ``destination`` is the BOLT11 text of one of our own
    invoices, that invoice, the wallet's spendable balance and its person's recent refusals
    after taking invoices off the node (``internal_refusals``): one statement, no decoding
    (an indexed lookup by the text). ``also``: columns the caller folds into the same read,
    best a tuple built once with bound parameters (then the statement is built once too),
    ``also_params`` their values (names not starting with ``p_``)."""
    params = {"p_wallet": wallet_id, "p_bolt11": own_bolt11(destination),
              "p_refused_since": utcnow() - REFUSALS_WINDOW, **(also_params or {})}
    row = (await session.execute(_payer_statement(also), params)).one_or_none()
    if row is None:
        return Payer(None, None, ())
    wallet, payment_hash, bolt11, payee, status, amount, expires_at, spendable, refused = \
        row[:9]
    own = None if payment_hash is None else OwnInvoice(
        payment_hash, bolt11, payee, status, None if amount is None else int(amount),
        expires_at, int(spendable), int(refused))
    return Payer(wallet, own, tuple(row[9:]))


@dataclass(frozen=True)
class PreparedDestination:
    """A withdrawal destination after every remote call it needs (LNURL / Lightning Address
    resolved to a BOLT11), made before any transaction opens."""

    kind: str  # onchain | bolt11 | lnurl
    destination: str  # what the client sent
    bolt11: str | None  # what will be paid over Lightning
    amount_msat: int | None  # the amount to pass on (None: the destination carries it)
    taken_off_node: bool = False  # one of our own invoices, already cancelled on the node
    payer: str | None = None  # the paying wallet's id, once it took an invoice off the node
    # Other names of an LNURL-pay payee: the Lightning Addresses its metadata names, screened
    # like the destination (found from outside: a listed address was paid by another link).
    aliases: tuple[str, ...] = ()

    def taken(self) -> tuple[str, str] | None:
        """The payment hash of our own invoice this took off the node and the paying wallet,
        if it did (for :func:`satvault.withdrawals.refused.cancels_on_refusal`)."""
        if not self.taken_off_node or self.bolt11 is None or self.payer is None:
            return None
        return decode(self.bolt11).payment_hash, self.payer


async def prepare_destination(sessions: async_sessionmaker[AsyncSession], *,
                              settings: Settings, lightning: LightningBackend | None,
                              wallet: Wallet, destination: str, amount_msat: int | None,
                              http: httpx.AsyncClient | None = None,
                              request: str = "") -> PreparedDestination:
    """Resolve the destination over the network, outside any transaction: no lock and no
    database connection is held while a remote LNURL server or the node answers (or does
    not). ``wallet`` pays (its ownership already checked). ``http``: the client for LNURL
    requests (default: a fresh one). ``request``: the caller's
    :func:`~satvault.lightning.takes.request_digest`, kept with a take of one of our
    invoices (so a request of the same key on the API's fast path sees it)."""
    prepared = await _resolve(settings=settings, lightning=lightning, destination=destination,
                              amount_msat=amount_msat, http=http)
    if prepared.bolt11 is None:
        return prepared
    assert lightning is not None  # _resolve refused a Lightning destination without one

    async def policy_first(session: AsyncSession, amount: int) -> None:
        await policy_before_node(session, wallet, amount)

    taken = await take_off_node(sessions, wallet=wallet, bolt11=prepared.bolt11,
                                amount_msat=prepared.amount_msat, settings=settings,
                                backend=lightning, before_node=policy_first, request=request)
    return replace(prepared, taken_off_node=taken, payer=wallet.id if taken else None)


async def policy_before_node(session: AsyncSession, wallet: Wallet, amount_msat: int) -> None:
    """The withdrawal policy's rules on an internal payment alone, checked before the payee's
    invoice leaves the node (raises their refusal): for the API's withdrawals and for
    vouchers' redemptions alike."""
    refuse_internal_early(await live_policy(session), wallet=wallet, amount_msat=amount_msat)


async def _resolve(*, settings: Settings, lightning: LightningBackend | None,
                   destination: str, amount_msat: int | None,
                   http: httpx.AsyncClient | None) -> PreparedDestination:
    kind = destination_kind(destination)
    if kind == "onchain":
        return PreparedDestination(kind, destination, None, amount_msat)
    if lightning is None:
        raise PaymentRefused("Lightning is not configured on this platform")
    if kind == "bolt11":
        return PreparedDestination(kind, destination, destination, amount_msat)
    if amount_msat is None:
        raise AmountRequired("amount_msat is required to pay an LNURL or address")
    async with contextlib.AsyncExitStack() as stack:
        client = http if http is not None else await stack.enter_async_context(
            httpx.AsyncClient(timeout=10.0, follow_redirects=False,
                              verify=default_context()))
        resolved = await resolve_pay_request(
            destination, amount_msat, http=client,
            allow_private_hosts=settings.environment == "development")
    return PreparedDestination(kind, destination, resolved.bolt11, None,
                               aliases=resolved.identifiers)


def risk_event(wallet: Wallet, prepared: PreparedDestination, *, settings: Settings,
               purpose: str = "withdrawal") -> Event:
    """What the rules see of a withdrawal: its amount, rail and counterparty (the on-chain
    address, or a Lightning payee's node key, with its route hints' nodes as ``hops``; an
    internal payment's is the payee's wallet,
    which :func:`withdraw` reads: see :func:`_internal_payee`). Pure; a destination that
    does not parse raises the error the withdrawal would."""
    return _event_and_hash(wallet, prepared, settings=settings, purpose=purpose)[0]


def _event_and_hash(wallet: Wallet, prepared: PreparedDestination, *, settings: Settings,
                    purpose: str) -> tuple[Event, str | None]:
    """:func:`risk_event`, and the payment hash of a Lightning destination (decoded once).
    An amount no rail could pay is refused here, before the rules screen it (found from
    outside: 21 million BTC over Lightning got the rules' refusal, a decision stored on the
    payer's record, instead of the per-payment limit's error)."""
    payment_hash: str | None = None
    hops: tuple[str, ...] = ()
    if prepared.kind == "onchain":
        address, _spk, kind, amount = resolve_destination(
            prepared.destination, prepared.amount_msat, settings.network)
        check_onchain_amount(amount, kind, settings)
        rail, counterparty = "onchain", address
    else:
        assert prepared.bolt11 is not None
        inv = check_invoice(prepared.bolt11, network=settings.network,
                            amount_msat=prepared.amount_msat)
        check_payment_size(inv.amount_msat, settings)
        amount, counterparty, payment_hash = inv.amount_msat, inv.payee, inv.payment_hash
        rail = "internal" if prepared.taken_off_node else "lightning"
        hops = () if prepared.taken_off_node else inv.hops
    return Event(wallet_id=wallet.id, ledger_account_id=wallet.ledger_account_id,
                 owner_type=wallet.owner_type, owner_id=wallet.owner_id, amount_msat=amount,
                 direction="out", rail="refund" if purpose == "refund" else rail,
                 payout_rail=rail, destination=prepared.destination,
                 counterparty=counterparty, asset=wallet.asset, hops=hops,
                 aliases=prepared.aliases), payment_hash


async def _internal_payee(session: AsyncSession, event: Event, payment_hash: str | None
                          ) -> Event:
    """An internal payment's counterparty is the wallet it pays (``wallet:<id>``), as on the
    API's fast path (:func:`pay_own_screened`), whatever named it (a BOLT11, a Lightning
    Address or LNURL resolved to one of our invoices, a voucher's redeemer): found from
    outside, one resolved from a Lightning Address was screened as our own node's key, so a
    listed wallet was paid through its address."""
    if payment_hash is None:
        return event
    payee = (await session.execute(select(LnInvoice.wallet_id).where(
        LnInvoice.payment_hash == payment_hash))).scalar_one_or_none()
    return event if payee is None else replace(event, counterparty=f"wallet:{payee}")


async def screen_withdrawal(session: AsyncSession, event: Event) -> Screening:
    """The rules' decision on a withdrawal, before any hold: a reject raises (the decision
    and its case are written after the rollback, see :class:`satvault.risk.RiskRejected`)."""
    screening = await screen(session, event)
    if screening.outcome == Outcome.REJECT:
        raise reject_error(screening, subject_type="withdrawal")
    return screening


async def withdraw(session: AsyncSession, *, settings: Settings,
                   lightning: LightningBackend | None,
                   wallet_for: Callable[[AsyncSession], Awaitable[Wallet]],
                   prepared: PreparedDestination, store_id: str | None = None,
                   invoice_id: str | None = None,
                   payer_wake: asyncio.Event | None = None,
                   on_store_invoice: StoreInvoiceHook | None = None,
                   initiator: str | None = None,
                   purpose: str = "withdrawal") -> Withdrawal:
    """The one path every withdrawal takes (API, refunds), inside the unit of work, once
    :func:`prepare_destination` has done the remote part. ``wallet_for`` runs the ownership
    check; ``payer_wake`` is set when the node has a payment to make; ``on_store_invoice``
    brings a store invoice paid internally up to date in the same transaction; ``purpose``:
    ``refund`` for an invoice refund (the rules see the rail as ``refund``), ``invoice_id``
    the store invoice it refunds (on the row and in its events from the first); ``initiator``:
    the user who asked (:func:`~satvault.withdrawals.policy.service.initiator_of`), who may
    never approve it if the withdrawal policy holds it for approvers.

    The risk rules screen it first (the wallet's row locked, so this wallet's withdrawals are
    screened one after another): approve goes on; review holds it in status ``review``
    (neither the payout job nor the Lightning payer takes it) and opens a case; reject
    raises :class:`satvault.risk.RiskRejected` naming the decision. Once the money is held,
    the withdrawal policy decides: allow, block (raises: nothing stays held) or hold it for
    approvers (``awaiting_approval``)."""
    wallet = await wallet_for(session)
    event, payment_hash = _event_and_hash(wallet, prepared, settings=settings, purpose=purpose)
    if prepared.taken_off_node:
        event = await _internal_payee(session, event, payment_hash)
    elif payment_hash is not None:
        await refuse_while_held(session, payment_hash)
    screening = await screen_withdrawal(session, event)
    if screening.outcome == Outcome.REVIEW:
        if prepared.kind == "onchain":
            wd = await request_withdrawal(session, wallet=wallet,
                                          destination=prepared.destination,
                                          amount_msat=prepared.amount_msat, settings=settings,
                                          store_id=store_id, invoice_id=invoice_id,
                                          status=WithdrawalStatus.REVIEW)
        else:
            if lightning is None:
                raise PaymentRefused("Lightning is not configured on this platform")
            assert prepared.bolt11 is not None
            wd = await hold_ln_for_review(
                session, wallet=wallet, bolt11=prepared.bolt11,
                amount_msat=prepared.amount_msat, destination=prepared.destination,
                internal=prepared.taken_off_node, settings=settings, store_id=store_id,
                invoice_id=invoice_id)
        wd.initiator = initiator  # for the approvers, once its case releases it
        await record(session, screening, subject_type="withdrawal", subject_id=wd.id)
        return wd
    if prepared.kind == "onchain":
        wd = await request_withdrawal(session, wallet=wallet,
                                      destination=prepared.destination,
                                      amount_msat=prepared.amount_msat,
                                      settings=settings, store_id=store_id,
                                      invoice_id=invoice_id)
    else:
        assert prepared.bolt11 is not None
        if lightning is None:
            raise PaymentRefused("Lightning is not configured on this platform")
        wd = await request_ln_withdrawal(
            session, wallet=wallet, bolt11=prepared.bolt11,
            amount_msat=prepared.amount_msat, settings=settings, backend=lightning,
            original=prepared.destination if prepared.kind == "lnurl" else None,
            store_id=store_id, invoice_id=invoice_id,
            taken_off_node=prepared.taken_off_node,
            on_store_invoice=on_store_invoice)
    # Who asked, on every withdrawal (found from outside: only a held one named its
    # initiator, so nothing tied the others to the person who made them).
    wd.initiator = initiator
    await record(session, screening, subject_type="withdrawal", subject_id=wd.id)
    # The withdrawal policy, once the money is held: allow, block (raises: the unit of work
    # rolls back and nothing stays held) or hold for approvers.
    version, decision = await decide_for(session, wd, wallet=wallet, bolt11=prepared.bolt11,
                                         settings=settings)
    await apply_decision(session, wd, decision=decision, version=version,
                         initiator=initiator, settings=settings)
    # An internal payment is settled already, one held for approvers waits for them; only a
    # payment for the node wakes the payer.
    if wd.method == WithdrawalMethod.LIGHTNING and wd.status == WithdrawalStatus.PENDING \
            and payer_wake is not None:
        payer_wake.set()
    return wd


async def pay_own_screened(session: AsyncSession, *, wallet: Wallet, own: OwnInvoice,
                           amount_msat: int, settings: Settings,
                           on_store_invoice: StoreInvoiceHook | None = None) -> Withdrawal:
    """The API's fast internal payment (one of our invoices, already taken off the node),
    screened like every withdrawal. The counterparty the rules see is the payee's wallet."""
    event = Event(wallet_id=wallet.id, ledger_account_id=wallet.ledger_account_id,
                  owner_type=wallet.owner_type, owner_id=wallet.owner_id,
                  amount_msat=amount_msat, direction="out", rail="internal",
                  destination=own.bolt11, counterparty=f"wallet:{own.wallet_id}",
                  asset=wallet.asset)
    screening = await screen_withdrawal(session, event)
    if screening.outcome == Outcome.REVIEW:
        wd = await hold_ln_for_review(session, wallet=wallet, bolt11=own.bolt11,
                                      amount_msat=amount_msat, destination=own.bolt11,
                                      internal=True, settings=settings)
        await record(session, screening, subject_type="withdrawal", subject_id=wd.id)
        return wd
    # Approved: the decision (no case) is written with the withdrawal, in its statement on
    # PostgreSQL.
    wid = new_id("wd")
    return await pay_own_invoice(
        session, wallet=wallet, payment_hash=own.payment_hash, amount_msat=amount_msat,
        destination=own.bolt11, settings=settings, on_store_invoice=on_store_invoice, wid=wid,
        also=decision_insert(screening, subject_type="withdrawal", subject_id=wid))


def voucher_withdrawal(*, settings: Settings, lightning: LightningBackend
                       ) -> VoucherWithdrawal:
    """What an LNURL-withdraw voucher's redemption requests its withdrawal through: screened
    like every withdrawal (the counterparty is the invoice's payee node)."""
    async def request(session: AsyncSession, wallet: Wallet, bolt11: str,
                      taken_off_node: bool, made_by: str | None) -> Withdrawal:
        prepared = PreparedDestination("bolt11", bolt11, bolt11, None, taken_off_node)
        # Whoever redeems a link is anonymous: the initiator is who made the voucher, who
        # never approves what it pays out (found from outside: an admin's voucher on a
        # customer's wallet named the customer, and the admin approved its payout). A
        # voucher made by nobody in particular names the wallet's owner.
        initiator = made_by if made_by is not None else await initiator_of(
            session, owner_type=wallet.owner_type, owner_id=wallet.owner_id)
        return await withdraw(session, settings=settings, lightning=lightning,
                              wallet_for=lambda _s: _ready(wallet), prepared=prepared,
                              initiator=initiator)
    return request


async def _ready(wallet: Wallet) -> Wallet:
    return wallet
