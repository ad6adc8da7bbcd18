"""LNURL served by satvault: Lightning Addresses, withdraw vouchers and LNURL-auth logins.

The services behind :mod:`satvault.web.routes.lnurl`, which answers the wallet-facing half
the LNURL way (HTTP 200 with ``{"status": "ERROR", "reason": …}``, LUD-01): a refusal the
wallet should read is :class:`Refused`, raised here with its reason.

* **Lightning Addresses** (LUD-16, 06, 09, 12): ``name@host`` maps to a wallet. The callback
  creates an invoice whose ``description_hash`` is the SHA-256 of exactly the metadata string
  the payRequest showed, which is built from the name and host alone so both calls agree.
* **Withdraw vouchers** (LUD-03): creating one holds its amount plus the Lightning fee reserve
  in the ledger (a pending transfer wallet → clearing, ``lnurlw:<id>:hold``, no timeout), so
  a voucher handed out can always be redeemed. Its LNURL is ``/lnurlw/<token>``: a random
  token (192 bits) returned once, at creation, and stored only as its SHA-256. The voucher id
  is the management handle the API, the audit log, the ledger and the logs show; it opens
  nothing (vouchers from before tokens have their id as token, so printed links still work).
  Redeeming claims the voucher with a conditional UPDATE (``open`` → ``used``: of two
  concurrent callbacks exactly one matches a row), voids the hold and requests the Lightning
  withdrawal of the wallet's invoice, all in one transaction: a refused invoice leaves the
  voucher open and the hold in place. A withdrawal that then definitely fails opens the
  voucher again with a new hold (:mod:`satvault.lightning.vouchers`); a payment whose outcome
  is not known keeps it used.
* **LNURL-auth** (LUD-04) logins are :mod:`satvault.lightning.lnurl_auth`'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.access import visible_wallet
from satvault.accounts.models import Wallet
from satvault.accounts.security import hash_secret
from satvault.accounts.service import Principal
from satvault.audit.service import record
from satvault.backends.lightning import LightningBackend
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.errors import AlreadyExists, InvalidInput, NotFound
from satvault.kernel.ids import new_id
from satvault.kernel.retrying import retrying
from satvault.kernel.text import one_line
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import transfer
from satvault.lightning.bolt11check import check_invoice, decode
from satvault.lightning.errors import AmountRequired, LightningError
from satvault.lightning.invoices import node_invoice, store_invoice
from satvault.lightning.lnurl_models import (
    LightningAddress,
    LnurlWithdrawVoucher,
    VoucherStatus,
)
from satvault.lightning.models import ISSUED_ON_REQUEST
from satvault.lightning.payments import fee_reserve, request_ln_withdrawal, take_off_node
from satvault.lightning.vouchers import not_expired, refusal, void_id
from satvault.payouts.models import Withdrawal
from satvault.payouts.service import check_ever_allowed

__all__ = ["COMMENT_ALLOWED", "MIN_SENDABLE_MSAT", "MIN_VOUCHER_LIFETIME", "SUCCESS_MESSAGE",
           "Refused", "VoucherWithdrawal", "address_invoice", "address_metadata",
           "address_name", "base_url", "cancel_voucher", "claim_address",
           "default_voucher_expiry", "host", "open_voucher",
           "redeem_voucher", "set_voucher_expiry", "visible_voucher", "voucher_by_link",
           "voucher_expiry", "voucher_link"]

MIN_SENDABLE_MSAT = 1_000
MIN_VOUCHER_LIFETIME = timedelta(minutes=1)
COMMENT_ALLOWED = 144
SUCCESS_MESSAGE = "Thanks, payment received"
RESERVED_NAMES = frozenset({"_", "abuse", "admin", "administrator", "billing", "help", "info",
                            "noreply", "postmaster", "root", "satvault", "security", "support"})
# At least one letter or digit: "." and ".." were claimed and could not be paid (a client
# normalises them out of the URL path; found from outside), "-" or "_." mean nobody.
_USERNAME = re.compile(r"(?=[._-]*[a-z0-9])[a-z0-9._-]{1,64}")
_NO_UPDATE_SYNC = {"synchronize_session": False}
_MAX_TOKEN = 64  # a link token is 32 characters (an old voucher's: its id, up to 40)


class Refused(Exception):
    """Why an LNURL exchange is refused; the wallet gets it as the ERROR reason."""


def base_url(settings: Settings) -> str:
    return settings.public_url.rstrip("/")


def host(settings: Settings) -> str:
    return urlsplit(base_url(settings)).netloc.lower()


# ----------------------------------------------------------------------- Lightning Addresses

def address_metadata(username: str, host: str) -> str:
    """The LUD-06 metadata of ``username@host``; a pure function of both, so the payRequest
    and the callback compute the same string and hence the same description_hash."""
    address = f"{username}@{host}"
    return json.dumps([["text/plain", f"Payment to {address}"], ["text/identifier", address]])


def address_name(path_name: str) -> str | None:
    """The stored username a /.well-known path names (LUD-16 ``+tag`` suffixes dropped)."""
    name = path_name.lower().split("+", 1)[0]
    return name if _USERNAME.fullmatch(name) else None


async def claim_address(session: AsyncSession, *, wallet: Wallet, username: str,
                        actor: str) -> LightningAddress:
    """Bind ``username`` (blanks around it dropped, lower-cased) to ``wallet``."""
    if wallet.asset != "BTC":
        raise InvalidInput("a Lightning Address needs a BTC wallet")
    username = username.strip(" \t").lower()
    if not _USERNAME.fullmatch(username):
        raise InvalidInput("a username is 1-64 characters of a-z, 0-9, '-', '_' and '.', "
                           "at least one a letter or digit")
    if username in RESERVED_NAMES or await session.get(LightningAddress, username) is not None:
        raise AlreadyExists(f"the username {username!r} is taken")
    row = LightningAddress(username=username, wallet_id=wallet.id, created_at=utcnow())
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError as exc:  # claimed concurrently
        raise AlreadyExists(f"the username {username!r} is taken") from exc
    await record(session, actor=actor, action="lightning_address.claim", object=username,
                 after={"wallet_id": wallet.id})
    return row


async def address_invoice(sessions: async_sessionmaker[AsyncSession], *,
                          backend: LightningBackend, settings: Settings, username: str,
                          amount_msat: int, comment: str | None) -> str:
    """The BOLT11 paying ``amount_msat`` to the address ``username`` names (a path segment,
    as the wallet sent it): the node first, with no transaction open, then a short one to
    record it. Raises :class:`Refused`, or the node's and the domain's own errors."""
    if not MIN_SENDABLE_MSAT <= amount_msat <= settings.ln_max_payment_msat:
        raise Refused(f"amount must be between {MIN_SENDABLE_MSAT} and "
                      f"{settings.ln_max_payment_msat} msat")
    if comment is not None and len(comment) > COMMENT_ALLOWED:
        raise Refused(f"a comment is at most {COMMENT_ALLOWED} characters")
    if comment is not None:
        # It becomes the payee's deposit description: one line, as names and labels are
        # (found from outside: newlines, ANSI escapes and direction controls reached it).
        try:
            one_line(comment, "a comment")
        except InvalidInput as exc:
            raise Refused(str(exc)) from None
    name = address_name(username)
    if name is None:
        raise Refused("unknown Lightning Address")
    here = host(settings)
    metadata = address_metadata(name, here)
    digest = hashlib.sha256(metadata.encode("utf-8")).digest()
    async with sessions() as s:
        row = await s.get(LightningAddress, name)
        wallet = await s.get(Wallet, row.wallet_id) if row else None
    if wallet is None:
        raise Refused("unknown Lightning Address")
    issued = await node_invoice(backend, amount_msat=amount_msat, hashed_description=metadata,
                                expiry_seconds=settings.ln_invoice_expiry_seconds,
                                max_msat=settings.ln_max_payment_msat)
    async with sessions() as s, s.begin():
        invoice = await store_invoice(
            s, issued, wallet=wallet, description_hash=digest, purpose=ISSUED_ON_REQUEST,
            expiry_seconds=settings.ln_invoice_expiry_seconds)
        # The invoice commits to the metadata by hash; keep something readable beside it.
        note = f"Lightning Address {name}@{here}" + (f": {comment}" if comment else "")
        invoice.description = note[:639]
        bolt11: str = invoice.bolt11
    return bolt11


# -------------------------------------------------------------------------- withdraw vouchers

def voucher_link(settings: Settings, token: str) -> str:
    """The URL a voucher's LNURL encodes: the wallet-facing request, opened by ``token``."""
    return f"{base_url(settings)}/lnurlw/{token}"


async def voucher_by_link(session: AsyncSession, token: str) -> LnurlWithdrawVoucher | None:
    """The voucher whose link token is ``token`` (one indexed lookup by its hash)."""
    if not 1 <= len(token) <= _MAX_TOKEN:
        return None
    found = await session.execute(select(LnurlWithdrawVoucher).where(
        LnurlWithdrawVoucher.link_hash == hash_secret(token)))
    return found.scalar_one_or_none()


async def open_voucher(session: AsyncSession, *, wallet: Wallet, amount_msat: int,
                       min_msat: int | None, description: str, settings: Settings,
                       actor: str, initiator: str | None = None,
                       expires_at: datetime | None = None,
                       expires_in: timedelta | None = None
                       ) -> tuple[LnurlWithdrawVoucher, str]:
    """A single-use voucher for up to ``amount_msat`` (at least ``min_msat``, default the
    same), its amount and fee reserve held in the ledger; with its link token, which exists
    nowhere else (only its hash is stored): give it to whoever is to redeem the voucher.
    ``expires_at``, or ``expires_in`` from now (at least :data:`MIN_VOUCHER_LIFETIME`
    ahead, at most the settings' maximum; neither: the default lifetime): past it the voucher
    refuses redemption and its hold is released. ``initiator``: the user who made it
    (``initiator_of_principal``), the initiator of whatever its redemption pays out."""
    low = min_msat if min_msat is not None else amount_msat
    now = utcnow()
    given = voucher_expiry(now, settings, expires_at=expires_at, expires_in=expires_in)
    expires_at = given if given is not None else default_voucher_expiry(now, settings)
    if wallet.asset != "BTC":
        raise InvalidInput("a withdraw voucher needs a BTC wallet")
    if low > amount_msat:
        raise InvalidInput("min_msat cannot exceed amount_msat")
    if amount_msat > settings.ln_max_payment_msat:
        raise InvalidInput(f"amount_msat is above the per-payment limit of "
                           f"{settings.ln_max_payment_msat} msat")
    # Frozen, or over a limit no redemption could pass: refused now, not held for nothing.
    await check_ever_allowed(session, wallet=wallet, amount_msat=amount_msat,
                             settings=settings, rail="lightning")
    vid, token = new_id("lnw"), secrets.token_urlsafe(24)
    reserve = fee_reserve(amount_msat, settings)
    platform = await ensure_platform_accounts(session, "BTC")
    voucher = LnurlWithdrawVoucher(
        id=vid, link_hash=hash_secret(token), wallet_id=wallet.id, k1=secrets.token_hex(32),
        min_msat=low,
        amount_msat=amount_msat, reserve_msat=reserve, description=description,
        status=VoucherStatus.OPEN, hold_id=f"lnurlw:{vid}:hold", withdrawal_id=None,
        created_at=now, closed_at=None, expires_at=expires_at, initiator=initiator)
    await transfer(session, TransferSpec(
        voucher.hold_id, wallet.ledger_account_id, platform.clearing.id,
        amount_msat + reserve, "BTC", kind=TransferKind.PENDING, code="lnurl_withdraw",
        ref=vid))
    session.add(voucher)
    await session.flush()
    await record(session, actor=actor, action="lnurl_withdraw.create", object=vid,
                 after={"wallet_id": wallet.id, "amount_msat": amount_msat,
                        "status": VoucherStatus.OPEN.value, "hold_id": voucher.hold_id,
                        "expires_at": expires_at.isoformat() if expires_at else None})
    return voucher, token


def default_voucher_expiry(now: datetime, settings: Settings) -> datetime | None:
    """When a voucher created now without an expiry expires (None: never, only when both the
    default and the maximum lifetime are 0)."""
    days = settings.voucher_default_lifetime_days or settings.voucher_max_lifetime_days
    if settings.voucher_max_lifetime_days:
        days = min(days, settings.voucher_max_lifetime_days)
    return now + timedelta(days=days) if days else None


def voucher_expiry(now: datetime, settings: Settings, *, expires_at: datetime | None,
                   expires_in: timedelta | None) -> datetime | None:
    """The expiry asked for (``expires_at``, or ``expires_in`` from now; None if neither),
    refused unless at least :data:`MIN_VOUCHER_LIFETIME` and at most the maximum lifetime
    ahead."""
    if expires_in is not None and expires_at is not None:
        raise InvalidInput("give expires_in or expires_at, not both")
    if expires_in is not None:
        expires_at = now + expires_in
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:  # a time without a zone is read as UTC
        expires_at = expires_at.replace(tzinfo=UTC)
    if expires_at < now + MIN_VOUCHER_LIFETIME:
        raise InvalidInput(f"a voucher's expiry must be at least "
                           f"{int(MIN_VOUCHER_LIFETIME.total_seconds())} s ahead")
    most = settings.voucher_max_lifetime_days
    if most and expires_at > now + timedelta(days=most):
        raise InvalidInput(f"a voucher's expiry may be at most {most} days ahead "
                           f"(SATVAULT_VOUCHER_MAX_LIFETIME_DAYS)")
    return expires_at


async def set_voucher_expiry(session: AsyncSession, voucher: LnurlWithdrawVoucher, *,
                             settings: Settings, actor: str, expires_at: datetime | None,
                             expires_in: timedelta | None) -> bool:
    """Give an open voucher a new expiry (sooner or later, within the maximum lifetime from
    now), audited; False (nothing done) when it is no longer open or its expiry has passed
    (the sweep expires it: a past expiry is never undone). ``voucher`` is refreshed either
    way."""
    now = utcnow()
    when = voucher_expiry(now, settings, expires_at=expires_at, expires_in=expires_in)
    if when is None:
        raise InvalidInput("give expires_in or expires_at")
    before = voucher.expires_at
    claimed = await session.execute(
        update(LnurlWithdrawVoucher)
        .where(LnurlWithdrawVoucher.id == voucher.id,
               LnurlWithdrawVoucher.status == VoucherStatus.OPEN, not_expired(now))
        .values(expires_at=when)
        .execution_options(**_NO_UPDATE_SYNC))
    await session.refresh(voucher)
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await record(session, actor=actor, action="lnurl_withdraw.expiry", object=voucher.id,
                 before={"expires_at": before.isoformat() if before else None},
                 after={"expires_at": when.isoformat()})
    return True


async def visible_voucher(session: AsyncSession, principal: Principal,
                          voucher_id: str) -> LnurlWithdrawVoucher:
    """The voucher if this caller may see its wallet; otherwise the same 404 as a missing
    one."""
    voucher = await session.get(LnurlWithdrawVoucher, voucher_id)
    try:
        if voucher is None:
            raise NotFound(voucher_id)
        await visible_wallet(session, principal, voucher.wallet_id)
    except NotFound as exc:
        raise NotFound(f"voucher {voucher_id!r} not found") from exc
    return voucher


async def cancel_voucher(session: AsyncSession, voucher: LnurlWithdrawVoucher, *,
                         actor: str) -> bool:
    """Cancel an unused voucher and release its hold; False (nothing done) when it is used or
    canceled already. ``voucher`` is refreshed either way."""
    claimed = await session.execute(
        update(LnurlWithdrawVoucher)
        .where(LnurlWithdrawVoucher.id == voucher.id,
               LnurlWithdrawVoucher.status == VoucherStatus.OPEN)
        .values(status=VoucherStatus.CANCELED, closed_at=utcnow())
        .execution_options(**_NO_UPDATE_SYNC))
    await session.refresh(voucher)
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await transfer(session, TransferSpec(
        void_id(voucher.hold_id), kind=TransferKind.VOID, pending_id=voucher.hold_id,
        code="lnurl_withdraw", ref=voucher.id))
    await record(session, actor=actor, action="lnurl_withdraw.cancel", object=voucher.id,
                 before={"status": VoucherStatus.OPEN.value},
                 after={"status": VoucherStatus.CANCELED.value})
    return True


# What may refuse a voucher's payment of one of our invoices before that invoice is taken off
# the node (the session, the voucher's wallet, the amount): the edge passes the withdrawal
# policy's rules on the payment alone, as the API's withdrawals check them.
VoucherBeforeNode = Callable[[AsyncSession, Wallet, int], Awaitable[None]]


async def _take_off_node(sessions: async_sessionmaker[AsyncSession], *, voucher_id: str,
                         k1: str, pr: str, settings: Settings,
                         backend: LightningBackend,
                         before_node: VoucherBeforeNode | None = None) -> str | None:
    """If ``pr`` is one of this platform's invoices, cancel it on the node before the
    redeeming transaction opens (only for a live voucher and its own k1, and unless
    ``before_node`` refuses the payment: raises): the paying wallet's id if it did."""
    async with sessions() as s:
        voucher = await s.get(LnurlWithdrawVoucher, voucher_id)
        if voucher is None or refusal(voucher, utcnow()) is not None \
                or not hmac.compare_digest(voucher.k1.encode(), k1.encode()):
            return None  # _redeem refuses it with the reason
        wallet = await s.get(Wallet, voucher.wallet_id)
    if wallet is None:
        return None
    try:
        invoice = check_invoice(pr, network=settings.network)
    except LightningError:
        return None  # _redeem refuses it with the voucher's own wording
    if not voucher.min_msat <= invoice.amount_msat <= voucher.amount_msat:
        return None  # the same: whoever holds a link cannot kill invoices it does not pay
    async def first(session: AsyncSession, amount_msat: int) -> None:
        if before_node is not None:
            await before_node(session, wallet, amount_msat)

    # The voucher's own hold pays: the wallet's free balance is not what decides.
    taken = await take_off_node(sessions, wallet=wallet, bolt11=pr, amount_msat=None,
                                settings=settings, backend=backend, check_balance=False,
                                before_node=first)
    return wallet.id if taken else None


REDEEM_LEASE = timedelta(minutes=2)  # longer than a node call's deadline


async def _claim(sessions: async_sessionmaker[AsyncSession], *, voucher_id: str,
                 k1: str) -> datetime | None:
    """Claim a live voucher for this redemption until the returned time, before anything is
    asked of the node (None: not a live voucher with this k1, which :func:`_redeem` refuses
    with its reason). Raises :class:`Refused` while another redemption holds it: whoever
    holds a link and calls it many times at once gets one redemption, and the others never
    take an invoice off the node (found from outside: each cancelled one, and each refusal
    counted against the voucher's owner)."""
    now = utcnow()
    until = now + REDEEM_LEASE
    V = LnurlWithdrawVoucher
    async with sessions() as s, s.begin():
        k1_of = (await s.execute(select(V.k1).where(V.id == voucher_id))).scalar_one_or_none()
        if k1_of is None or not hmac.compare_digest(k1_of.encode(), k1.encode()):
            return None
        claimed = await s.execute(
            update(V).where(V.id == voucher_id, V.status == VoucherStatus.OPEN,
                            or_(V.redeeming_until.is_(None), V.redeeming_until <= now),
                            not_expired(now))
            .values(redeeming_until=until).execution_options(**_NO_UPDATE_SYNC))
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            return until
        busy = (await s.execute(select(V.redeeming_until).where(
            V.id == voucher_id, V.status == VoucherStatus.OPEN))).scalar_one_or_none()
    if busy is not None and busy > now:
        raise Refused("this withdraw link is being redeemed; try again in a minute")
    return None


async def _release(sessions: async_sessionmaker[AsyncSession], *, voucher_id: str,
                   lease: datetime) -> None:
    """Give the claim back (the voucher used, or still open after a refusal)."""
    V = LnurlWithdrawVoucher
    async with sessions() as s, s.begin():
        await s.execute(update(V).where(V.id == voucher_id, V.redeeming_until == lease)
                        .values(redeeming_until=None).execution_options(**_NO_UPDATE_SYNC))


# What redeeming a voucher calls to request its withdrawal (default: request_ln_withdrawal)
# with the voucher's wallet, the invoice, whether it was taken off our node and who made the
# voucher; the edge passes one that screens it with the risk rules first (satvault.withdrawals).
VoucherWithdrawal = Callable[[AsyncSession, Wallet, str, bool, str | None],
                             Awaitable[Withdrawal]]


async def _redeem(session: AsyncSession, *, voucher_id: str, k1: str, pr: str,
                  settings: Settings, backend: LightningBackend,
                  taken_off_node: bool = False,
                  request: VoucherWithdrawal | None = None) -> str:
    """Claim the voucher, release its hold and request the withdrawal; the withdrawal id."""
    voucher = await session.get(LnurlWithdrawVoucher, voucher_id, populate_existing=True)
    if voucher is None or not hmac.compare_digest(voucher.k1.encode(), k1.encode()):
        raise Refused("unknown withdraw link or wrong k1")
    now = utcnow()
    reason = refusal(voucher, now)
    if reason is not None:
        raise Refused(reason)
    try:
        invoice = check_invoice(pr, network=settings.network)
    except AmountRequired as exc:  # given no amount, only an amountless invoice raises this
        raise Refused("the invoice must carry an amount") from exc
    if not voucher.min_msat <= invoice.amount_msat <= voucher.amount_msat:
        raise Refused(f"the invoice is for {invoice.amount_msat} msat; this link pays "
                      f"{voucher.min_msat} to {voucher.amount_msat} msat")
    claimed = await session.execute(
        update(LnurlWithdrawVoucher)
        .where(LnurlWithdrawVoucher.id == voucher_id,
               LnurlWithdrawVoucher.status == VoucherStatus.OPEN,
               # the hold read above (a voucher reopened meanwhile has another)
               LnurlWithdrawVoucher.hold_id == voucher.hold_id,
               not_expired(now))  # the expiry sweep claims it with the opposite
        .values(status=VoucherStatus.USED, closed_at=now).execution_options(**_NO_UPDATE_SYNC))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        # A concurrent callback or the expiry sweep won: say which.
        await session.refresh(voucher)
        raise Refused(refusal(voucher, now) or "already used")
    await transfer(session, TransferSpec(
        void_id(voucher.hold_id), kind=TransferKind.VOID, pending_id=voucher.hold_id,
        code="lnurl_withdraw", ref=voucher_id))
    wallet = await session.get(Wallet, voucher.wallet_id)
    assert wallet is not None
    if request is not None:
        withdrawal = await request(session, wallet, pr, taken_off_node, voucher.initiator)
    else:
        withdrawal = await request_ln_withdrawal(session, wallet=wallet, bolt11=pr,
                                                 amount_msat=None, settings=settings,
                                                 backend=backend,
                                                 taken_off_node=taken_off_node)
    await session.execute(
        update(LnurlWithdrawVoucher).where(LnurlWithdrawVoucher.id == voucher_id)
        .values(withdrawal_id=withdrawal.id).execution_options(**_NO_UPDATE_SYNC))
    await record(session, actor="lnurl-withdraw", action="lnurl_withdraw.redeem",
                 object=voucher_id, before={"withdrawal_id": None},
                 after={"withdrawal_id": withdrawal.id, "amount_msat": invoice.amount_msat})
    return withdrawal.id


async def redeem_voucher(sessions: async_sessionmaker[AsyncSession], *, voucher_id: str,
                         k1: str, pr: str, settings: Settings, backend: LightningBackend,
                         payer_wake: asyncio.Event | None = None,
                         request: VoucherWithdrawal | None = None,
                         on_refused: Callable[[str, str], Awaitable[object]] | None = None,
                         before_node: VoucherBeforeNode | None = None) -> str:
    """Pay the wallet's invoice ``pr`` from the voucher; the withdrawal id. Our own invoice
    is taken off the node first, with no transaction open; then one unit of work (retried on
    a conflict) claims the voucher and requests the withdrawal (through ``request`` when
    given: the edge's screens it with the risk rules). ``payer_wake`` is set after.
    ``on_refused``: called with the invoice's payment hash and the paying wallet's id when
    the unit of work refused (rolled back) after the invoice was taken off the node (the edge
    passes :func:`satvault.withdrawals.refused.cancel_refused`). ``before_node``: what may
    refuse the payment of one of our invoices before it leaves the node (the edge passes
    :func:`satvault.withdrawals.service.policy_before_node`).
    Raises :class:`Refused`, or the node's and the domain's own errors."""
    lease = await _claim(sessions, voucher_id=voucher_id, k1=k1)
    try:
        payer = await _take_off_node(sessions, voucher_id=voucher_id, k1=k1, pr=pr,
                                     settings=settings, backend=backend,
                                     before_node=before_node)
        try:
            withdrawal_id = await retrying(sessions, lambda s: _redeem(
                s, voucher_id=voucher_id, k1=k1, pr=pr, settings=settings, backend=backend,
                taken_off_node=payer is not None, request=request))
        except Exception:
            if payer is not None and on_refused is not None:
                await on_refused(decode(pr).payment_hash, payer)
            raise
    finally:
        if lease is not None:
            await _release(sessions, voucher_id=voucher_id, lease=lease)
    if payer_wake is not None:
        payer_wake.set()
    return withdrawal_id
