"""LNURL served by satvault: Lightning Addresses, withdraw vouchers and LNURL-auth logins.

Three services, each a wallet-facing half (plain GETs answered the LNURL way: HTTP 200 with
``{"status": "ERROR", "reason": …}`` on refusal, ``Access-Control-Allow-Origin: *``, LUD-01)
and an owner-facing half under ``/api/v1`` (API keys, problem+json):

* **Lightning Addresses** (LUD-16, 06, 09, 12): ``name@host`` maps to a wallet. The callback
  creates an invoice whose ``description_hash`` is the SHA-256 of exactly the metadata string
  the payRequest showed, which is built from the name and host alone so both calls agree.
* **Withdraw vouchers** (LUD-03): creating one holds its amount plus the Lightning fee reserve
  in the ledger (a pending transfer wallet → clearing, ``lnurlw:<id>:hold``, no timeout), so
  a voucher handed out can always be redeemed. Redeeming claims the voucher with a conditional
  UPDATE (``open`` → ``used``: of two concurrent callbacks exactly one matches a row), voids
  the hold and requests the Lightning withdrawal of the wallet's invoice, all in one
  transaction: a refused invoice leaves the voucher open and the hold in place.
* **LNURL-auth** (LUD-04): a challenge ``k1`` (32 random bytes) signed by a wallet's linking
  key logs in the user bound to that key, created on first use. The browser that asked for
  the challenge also got a secret; only with it can it exchange the verified challenge, once,
  for an API key. ``k1`` itself is no credential: it is in the QR code, in the wallet's
  callback URL and so in access logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from coincurve import PublicKey
from coincurve.ecdsa import cdata_to_der, der_to_cdata, signature_normalize
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.api import visible_wallet
from satvault.accounts.models import User, Wallet
from satvault.accounts.security import hash_secret
from satvault.accounts.service import Principal, audit, create_api_key, create_user
from satvault.backends.errors import BackendError
from satvault.backends.lightning import LightningBackend
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.errors import (
    AlreadyExists,
    ConcurrentUpdate,
    InvalidInput,
    NotFound,
    SatvaultError,
)
from satvault.kernel.ids import new_id
from satvault.kernel.retrying import retrying
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import transfer
from satvault.lightning.bolt11check import check_invoice
from satvault.lightning.errors import AmountRequired, LightningError
from satvault.lightning.invoices import node_invoice, store_invoice
from satvault.lightning.lnurl import encode_lnurl
from satvault.lightning.lnurl_models import (
    LightningAddress,
    LnurlAuthChallenge,
    LnurlAuthKey,
    LnurlWithdrawVoucher,
)
from satvault.lightning.payments import fee_reserve, request_ln_withdrawal, take_off_node
from satvault.logs import get_logger
from satvault.web.deps import OptionalIdempotencyKey, SessionDep, SettingsDep, require_scope
from satvault.web.fields import Memo, Msat
from satvault.web.idempotency import run_idempotent
from satvault.web.openapi import problem_responses
from satvault.web.problems import problem
from satvault.web.ratelimit import CreateLimit, PublicCreateLimit, PublicLimit

__all__ = ["address_metadata", "router"]

log = get_logger(__name__)
router = APIRouter(tags=["lnurl"],
                   # a node or the ledger busy, unreachable or not set up
                   responses=problem_responses(503))
WalletReader = Annotated[Principal, Depends(require_scope("wallet:read"))]
WalletWriter = Annotated[Principal, Depends(require_scope("wallet:write"))]
Withdrawer = Annotated[Principal, Depends(require_scope("withdrawals:write"))]

MIN_SENDABLE_MSAT = 1_000
COMMENT_ALLOWED = 144
SUCCESS_MESSAGE = "Thanks, payment received"
AUTH_TTL = timedelta(minutes=10)
AUTH_PURGE_AFTER = timedelta(days=1)
SESSION_SCOPES = ("wallet:read", "wallet:write", "withdrawals:write")
RESERVED_NAMES = frozenset({"_", "abuse", "admin", "administrator", "billing", "help", "info",
                            "noreply", "postmaster", "root", "satvault", "security", "support"})
_USERNAME = re.compile(r"[a-z0-9._-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CORS = {"Access-Control-Allow-Origin": "*"}
_NO_UPDATE_SYNC = {"synchronize_session": False}


class _Refusal(Exception):
    """Why an LNURL exchange is refused; the wallet gets it as the ERROR reason."""


# ------------------------------------------------------------------------------------ helpers

def _lnurl_error(reason: str) -> JSONResponse:
    return JSONResponse({"status": "ERROR", "reason": reason}, headers=_CORS)


def _lnurl_ok(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=_CORS)


def _base_url(settings: Settings) -> str:
    return settings.public_url.rstrip("/")


def _host(settings: Settings) -> str:
    return urlsplit(_base_url(settings)).netloc.lower()


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


def _lightning(request: Request) -> LightningBackend | None:
    backend: LightningBackend | None = getattr(request.app.state.runtime, "lightning", None)
    return backend


def _parse_msat(value: str | None) -> int | None:
    ok = value is not None and value.isascii() and value.isdigit() and len(value) <= 18
    return int(value) if ok and value is not None else None


def address_metadata(username: str, host: str) -> str:
    """The LUD-06 metadata of ``username@host``; a pure function of both, so the payRequest
    and the callback compute the same string and hence the same description_hash."""
    address = f"{username}@{host}"
    return json.dumps([["text/plain", f"Payment to {address}"], ["text/identifier", address]])


def _address_name(path_name: str) -> str | None:
    """The stored username a /.well-known path names (LUD-16 ``+tag`` suffixes dropped)."""
    name = path_name.lower().split("+", 1)[0]
    return name if _USERNAME.fullmatch(name) else None


# ----------------------------------------------------------------------- Lightning Addresses

class AddressIn(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[ \t]*[A-Za-z0-9._-]+[ \t]*$",
                          description="Stored lower-case, without surrounding blanks.")


class AddressOut(BaseModel):
    username: str
    wallet_id: str
    address: str
    lnurl: str


def _address_out(row: LightningAddress, settings: Settings) -> AddressOut:
    return AddressOut(username=row.username, wallet_id=row.wallet_id,
                      address=f"{row.username}@{_host(settings)}",
                      lnurl=encode_lnurl(f"{_base_url(settings)}/.well-known/lnurlp/"
                                         f"{row.username}"))


@router.post("/api/v1/wallets/{wallet_id}/lightning-address", response_model=AddressOut,
             status_code=201, dependencies=[CreateLimit],
             responses=problem_responses(409))  # the username is taken
async def claim_address(wallet_id: str, body: AddressIn, session: SessionDep,
                        settings: SettingsDep, principal: WalletWriter) -> AddressOut:
    wallet = await visible_wallet(session, principal, wallet_id)
    if wallet.asset != "BTC":
        raise InvalidInput("a Lightning Address needs a BTC wallet")
    username = body.username.strip(" \t").lower()
    if not _USERNAME.fullmatch(username):
        raise InvalidInput("a username is 1-64 characters of a-z, 0-9, '-', '_' and '.'")
    if username in RESERVED_NAMES or await session.get(LightningAddress, username) is not None:
        raise AlreadyExists(f"the username {username!r} is taken")
    row = LightningAddress(username=username, wallet_id=wallet.id, created_at=utcnow())
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError as exc:  # claimed concurrently
        raise AlreadyExists(f"the username {username!r} is taken") from exc
    await audit(session, actor=f"key:{principal.key_id}", action="lightning_address.claim",
                subject=username, details={"wallet_id": wallet.id})
    return _address_out(row, settings)


@router.get("/.well-known/lnurlp/{username}", include_in_schema=False,
            dependencies=[PublicLimit])
async def pay_request(username: str, request: Request, session: SessionDep,
                      settings: SettingsDep) -> JSONResponse:
    name = _address_name(username)
    if name is None or await session.get(LightningAddress, name) is None:
        return _lnurl_error("unknown Lightning Address")
    if _lightning(request) is None:
        return _lnurl_error("Lightning payments are not available here right now")
    return _lnurl_ok({
        "tag": "payRequest",
        "callback": f"{_base_url(settings)}/lnurlp/{name}/callback",
        "minSendable": MIN_SENDABLE_MSAT,
        "maxSendable": settings.ln_max_payment_msat,
        "metadata": address_metadata(name, _host(settings)),
        "commentAllowed": COMMENT_ALLOWED,
    })


@router.get("/lnurlp/{username}/callback", include_in_schema=False,
            dependencies=[PublicCreateLimit])
async def pay_callback(username: str, request: Request, amount: str | None = None,
                       comment: str | None = None) -> JSONResponse:
    settings: Settings = request.app.state.settings
    backend = _lightning(request)
    msat = _parse_msat(amount)
    if backend is None:
        return _lnurl_error("Lightning payments are not available here right now")
    if msat is None:
        return _lnurl_error("amount (in millisatoshis) is required")
    if not MIN_SENDABLE_MSAT <= msat <= settings.ln_max_payment_msat:
        return _lnurl_error(f"amount must be between {MIN_SENDABLE_MSAT} and "
                            f"{settings.ln_max_payment_msat} msat")
    if comment is not None and len(comment) > COMMENT_ALLOWED:
        return _lnurl_error(f"a comment is at most {COMMENT_ALLOWED} characters")
    name = _address_name(username)
    if name is None:
        return _lnurl_error("unknown Lightning Address")
    host = _host(settings)
    metadata = address_metadata(name, host)
    digest = hashlib.sha256(metadata.encode("utf-8")).digest()
    try:
        async with _sessions(request)() as s:
            row = await s.get(LightningAddress, name)
            wallet = await s.get(Wallet, row.wallet_id) if row else None
        if wallet is None:
            raise _Refusal("unknown Lightning Address")
        # The node first, with no transaction open; then a short one to record it.
        issued = await node_invoice(backend, amount_msat=msat, description_hash=digest,
                                    expiry_seconds=settings.ln_invoice_expiry_seconds,
                                    max_msat=settings.ln_max_payment_msat)
        async with _sessions(request)() as s, s.begin():
            invoice = await store_invoice(
                s, issued, wallet=wallet, description_hash=digest, purpose="lnurl",
                expiry_seconds=settings.ln_invoice_expiry_seconds)
            # The invoice commits to the metadata by hash; keep something readable beside it.
            note = f"Lightning Address {name}@{host}" + (f": {comment}" if comment else "")
            invoice.description = note[:639]
            pr = invoice.bolt11
    except _Refusal as exc:
        return _lnurl_error(str(exc))
    except BackendError as exc:  # before SatvaultError: a node's text is not for the payer
        log.warning("lnurlp_invoice_failed", username=name, error=str(exc))
        return _lnurl_error("could not create an invoice right now; try again")
    except SatvaultError as exc:
        return _lnurl_error(str(exc))
    return _lnurl_ok({"pr": pr, "routes": [],
                      "successAction": {"tag": "message", "message": SUCCESS_MESSAGE}})


# -------------------------------------------------------------------------- withdraw vouchers

class VoucherIn(BaseModel):
    amount_msat: Msat = Field(description="the most the holder may withdraw")
    min_msat: Msat | None = Field(None, description="the least (default: amount_msat)")
    description: Memo = ""


class VoucherOut(BaseModel):
    id: str
    wallet_id: str
    lnurl: str
    amount_msat: int
    min_msat: int
    held_msat: int
    description: str
    status: str
    withdrawal_id: str | None
    created_at: datetime


def _voucher_out(v: LnurlWithdrawVoucher, settings: Settings) -> VoucherOut:
    return VoucherOut(id=v.id, wallet_id=v.wallet_id,
                      lnurl=encode_lnurl(f"{_base_url(settings)}/lnurlw/{v.id}"),
                      amount_msat=v.amount_msat, min_msat=v.min_msat,
                      held_msat=v.amount_msat + v.reserve_msat, description=v.description,
                      status=v.status, withdrawal_id=v.withdrawal_id, created_at=v.created_at)


async def _create_voucher(session: AsyncSession, *, wallet: Wallet, body: VoucherIn,
                          settings: Settings, actor: str) -> LnurlWithdrawVoucher:
    low = body.min_msat if body.min_msat is not None else body.amount_msat
    if wallet.asset != "BTC":
        raise InvalidInput("a withdraw voucher needs a BTC wallet")
    if low > body.amount_msat:
        raise InvalidInput("min_msat cannot exceed amount_msat")
    if body.amount_msat > settings.ln_max_payment_msat:
        raise InvalidInput(f"amount_msat is above the per-payment limit of "
                           f"{settings.ln_max_payment_msat} msat")
    vid = new_id("lnw")
    reserve = fee_reserve(body.amount_msat, settings)
    platform = await ensure_platform_accounts(session, "BTC")
    voucher = LnurlWithdrawVoucher(
        id=vid, wallet_id=wallet.id, k1=secrets.token_hex(32), min_msat=low,
        amount_msat=body.amount_msat, reserve_msat=reserve, description=body.description,
        status="open", hold_id=f"lnurlw:{vid}:hold", withdrawal_id=None, created_at=utcnow(),
        closed_at=None)
    await transfer(session, TransferSpec(
        voucher.hold_id, wallet.ledger_account_id, platform.clearing.id,
        body.amount_msat + reserve, "BTC", kind=TransferKind.PENDING, code="lnurl_withdraw",
        ref=vid))
    session.add(voucher)
    await session.flush()
    await audit(session, actor=actor, action="lnurl_withdraw.create", subject=vid,
                details={"wallet_id": wallet.id, "amount_msat": body.amount_msat})
    return voucher


@router.post("/api/v1/wallets/{wallet_id}/lnurl-withdraw", response_model=VoucherOut,
             status_code=201, dependencies=[CreateLimit])
async def create_voucher(
    wallet_id: str, body: VoucherIn, request: Request, principal: Withdrawer,
    idempotency_key: OptionalIdempotencyKey = None,
) -> JSONResponse:
    """Hold the amount and return a single-use LNURL-withdraw. ``Idempotency-Key`` optional."""
    settings: Settings = request.app.state.settings

    async def work(session: AsyncSession) -> tuple[int, Any]:
        wallet = await visible_wallet(session, principal, wallet_id)
        voucher = await _create_voucher(session, wallet=wallet, body=body, settings=settings,
                                        actor=f"key:{principal.key_id}")
        return 201, _voucher_out(voucher, settings).model_dump(mode="json")

    if idempotency_key:
        return await run_idempotent(request, owner=f"{principal.owner_type}:"
                                    f"{principal.owner_id}", key=idempotency_key, work=work)
    async with _sessions(request)() as s, s.begin():
        status, payload = await work(s)
    return JSONResponse(payload, status_code=status)


async def _visible_voucher(session: AsyncSession, principal: Principal,
                           voucher_id: str) -> LnurlWithdrawVoucher:
    voucher = await session.get(LnurlWithdrawVoucher, voucher_id)
    try:
        if voucher is None:
            raise NotFound(voucher_id)
        await visible_wallet(session, principal, voucher.wallet_id)
    except NotFound as exc:
        raise NotFound(f"voucher {voucher_id!r} not found") from exc
    return voucher


@router.get("/api/v1/lnurl-withdraw/{voucher_id}", response_model=VoucherOut)
async def get_voucher(voucher_id: str, session: SessionDep, settings: SettingsDep,
                      principal: WalletReader) -> VoucherOut:
    return _voucher_out(await _visible_voucher(session, principal, voucher_id), settings)


@router.delete("/api/v1/lnurl-withdraw/{voucher_id}", response_model=VoucherOut,
               responses=problem_responses(409))  # used or canceled already
async def cancel_voucher(voucher_id: str, session: SessionDep, settings: SettingsDep,
                         principal: Withdrawer) -> VoucherOut | JSONResponse:
    """Cancel an unused voucher and release its hold; a used or canceled one is a 409."""
    voucher = await _visible_voucher(session, principal, voucher_id)
    claimed = await session.execute(
        update(LnurlWithdrawVoucher)
        .where(LnurlWithdrawVoucher.id == voucher_id, LnurlWithdrawVoucher.status == "open")
        .values(status="canceled", closed_at=utcnow()).execution_options(**_NO_UPDATE_SYNC))
    await session.refresh(voucher)
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return problem(409, "voucher-not-open", f"voucher {voucher_id!r} is {voucher.status}")
    await transfer(session, TransferSpec(
        f"lnurlw:{voucher_id}:void", kind=TransferKind.VOID, pending_id=voucher.hold_id,
        code="lnurl_withdraw", ref=voucher_id))
    await audit(session, actor=f"key:{principal.key_id}", action="lnurl_withdraw.cancel",
                subject=voucher_id)
    return _voucher_out(voucher, settings)


@router.get("/lnurlw/{voucher_id}", include_in_schema=False, dependencies=[PublicLimit])
async def withdraw_request(voucher_id: str, session: SessionDep,
                           settings: SettingsDep) -> JSONResponse:
    voucher = await session.get(LnurlWithdrawVoucher, voucher_id)
    if voucher is None:
        return _lnurl_error("unknown withdraw link")
    if voucher.status != "open":
        return _lnurl_error("already used" if voucher.status == "used"
                            else "this withdraw link was canceled")
    return _lnurl_ok({
        "tag": "withdrawRequest",
        "callback": f"{_base_url(settings)}/lnurlw/{voucher.id}/callback",
        "k1": voucher.k1,
        "defaultDescription": voucher.description,
        "minWithdrawable": voucher.min_msat,
        "maxWithdrawable": voucher.amount_msat,
    })


async def _take_off_node(request: Request, *, voucher_id: str, k1: str, pr: str,
                         settings: Settings, backend: LightningBackend) -> bool:
    """If ``pr`` is one of this platform's invoices, cancel it on the node before the
    redeeming transaction opens (only for a live voucher and its own k1)."""
    async with _sessions(request)() as s:
        voucher = await s.get(LnurlWithdrawVoucher, voucher_id)
        if voucher is None or voucher.status != "open" \
                or not hmac.compare_digest(voucher.k1.encode(), k1.encode()):
            return False  # _redeem refuses it with the reason
        wallet = await s.get(Wallet, voucher.wallet_id)
    if wallet is None:
        return False
    try:
        check_invoice(pr, network=settings.network)
    except LightningError:
        return False  # _redeem refuses it with the voucher's own wording
    # The voucher's own hold pays: the wallet's free balance is not what decides.
    return await take_off_node(_sessions(request), wallet=wallet, bolt11=pr, amount_msat=None,
                               settings=settings, backend=backend, check_balance=False)


async def _redeem(session: AsyncSession, *, voucher_id: str, k1: str, pr: str,
                  settings: Settings, backend: LightningBackend,
                  taken_off_node: bool = False) -> str:
    """Claim the voucher, release its hold and request the withdrawal; the withdrawal id."""
    voucher = await session.get(LnurlWithdrawVoucher, voucher_id, populate_existing=True)
    if voucher is None or not hmac.compare_digest(voucher.k1.encode(), k1.encode()):
        raise _Refusal("unknown withdraw link or wrong k1")
    if voucher.status != "open":
        raise _Refusal("already used" if voucher.status == "used"
                       else "this withdraw link was canceled")
    try:
        invoice = check_invoice(pr, network=settings.network)
    except AmountRequired as exc:  # given no amount, only an amountless invoice raises this
        raise _Refusal("the invoice must carry an amount") from exc
    if not voucher.min_msat <= invoice.amount_msat <= voucher.amount_msat:
        raise _Refusal(f"the invoice is for {invoice.amount_msat} msat; this link pays "
                       f"{voucher.min_msat} to {voucher.amount_msat} msat")
    claimed = await session.execute(
        update(LnurlWithdrawVoucher)
        .where(LnurlWithdrawVoucher.id == voucher_id, LnurlWithdrawVoucher.status == "open")
        .values(status="used", closed_at=utcnow()).execution_options(**_NO_UPDATE_SYNC))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise _Refusal("already used")  # a concurrent callback won
    await transfer(session, TransferSpec(
        f"lnurlw:{voucher_id}:void", kind=TransferKind.VOID, pending_id=voucher.hold_id,
        code="lnurl_withdraw", ref=voucher_id))
    wallet = await session.get(Wallet, voucher.wallet_id)
    assert wallet is not None
    withdrawal = await request_ln_withdrawal(session, wallet=wallet, bolt11=pr,
                                             amount_msat=None, settings=settings,
                                             backend=backend, taken_off_node=taken_off_node)
    await session.execute(
        update(LnurlWithdrawVoucher).where(LnurlWithdrawVoucher.id == voucher_id)
        .values(withdrawal_id=withdrawal.id).execution_options(**_NO_UPDATE_SYNC))
    await audit(session, actor="lnurl-withdraw", action="lnurl_withdraw.redeem",
                subject=voucher_id, details={"withdrawal_id": withdrawal.id,
                                             "amount_msat": invoice.amount_msat})
    return withdrawal.id


@router.get("/lnurlw/{voucher_id}/callback", include_in_schema=False,
            dependencies=[PublicCreateLimit])
async def withdraw_callback(voucher_id: str, request: Request, k1: str | None = None,
                            pr: str | None = None) -> JSONResponse:
    settings: Settings = request.app.state.settings
    backend = _lightning(request)
    if not k1 or not pr:
        return _lnurl_error("k1 and pr are required")
    if backend is None:
        return _lnurl_error("Lightning payments are not available here right now")
    try:
        taken = await _take_off_node(request, voucher_id=voucher_id, k1=k1, pr=pr,
                                     settings=settings, backend=backend)
        withdrawal_id = await retrying(_sessions(request), lambda s: _redeem(
            s, voucher_id=voucher_id, k1=k1, pr=pr, settings=settings, backend=backend,
            taken_off_node=taken))
    except _Refusal as exc:
        return _lnurl_error(str(exc))
    except BackendError as exc:  # before SatvaultError: a node's text is not for the payer
        log.warning("lnurlw_redeem_failed", voucher=voucher_id, error=str(exc))
        return _lnurl_error("the node is not available right now; try again")
    except SatvaultError as exc:
        return _lnurl_error(str(exc))
    log.info("lnurlw_redeemed", voucher=voucher_id, withdrawal=withdrawal_id)
    wake = getattr(request.app.state.runtime, "payer_wake", None)
    if wake is not None:
        wake.set()
    return _lnurl_ok({"status": "OK"})


# ------------------------------------------------------------------------------ LNURL-auth

class ChallengeOut(BaseModel):
    k1: str
    lnurl: str
    session_token: str = Field(description="secret for POST /lnurl-auth/{k1}/session; "
                                           "keep it in the browser that shows the QR code")
    expires_at: datetime


class SessionIn(BaseModel):
    session_token: str = Field(min_length=1, max_length=200)


class SessionOut(BaseModel):
    api_key: str
    key_id: str
    user_id: str
    scopes: list[str]


def verify_login_signature(k1: str, sig: str, key: str) -> bool:
    """LUD-04: ``sig`` (DER, hex) signs the 32 bytes of ``k1`` (hex) with ``key`` (compressed
    secp256k1, hex). High-S signatures are normalised first, as signers differ there."""
    try:
        message, der, pub = bytes.fromhex(k1), bytes.fromhex(sig), bytes.fromhex(key)
        if len(message) != 32 or len(pub) != 33 or not 8 <= len(der) <= 73:
            return False
        _, low_s = signature_normalize(der_to_cdata(der))
        return PublicKey(pub).verify(cdata_to_der(low_s), message, hasher=None)
    except (ValueError, TypeError):
        return False


@router.get("/lnurl-auth/challenge", response_model=ChallengeOut,
            dependencies=[PublicCreateLimit])
async def auth_challenge(session: SessionDep, settings: SettingsDep,
                         response: Response) -> ChallengeOut:
    now = utcnow()
    await session.execute(delete(LnurlAuthChallenge).where(
        LnurlAuthChallenge.expires_at < now - AUTH_PURGE_AFTER))
    k1, token = secrets.token_hex(32), secrets.token_urlsafe(32)
    session.add(LnurlAuthChallenge(k1=k1, session_hash=hash_secret(token), status="open",
                                   created_at=now, expires_at=now + AUTH_TTL))
    response.headers["Cache-Control"] = "no-store"
    url = f"{_base_url(settings)}/lnurl-auth/callback?tag=login&k1={k1}&action=login"
    return ChallengeOut(k1=k1, lnurl=encode_lnurl(url), session_token=token,
                        expires_at=now + AUTH_TTL)


async def _user_for_key(session: AsyncSession, key: str) -> str:
    """The user bound to a linking key, created (with a placeholder e-mail) on first use."""
    bound = await session.get(LnurlAuthKey, key)
    if bound is None:
        try:
            async with session.begin_nested():
                new = await create_user(session, email=f"{key[:40]}@lnurl-auth.invalid",
                                        display_name=f"lnurl-auth {key[:12]}",
                                        actor="lnurl-auth")
                bound = LnurlAuthKey(linking_key=key, user_id=new.id, created_at=utcnow())
                session.add(bound)
                await session.flush()
        except IntegrityError as exc:  # the same key logging in twice at once
            raise ConcurrentUpdate("linking key registered concurrently") from exc
        except AlreadyExists as exc:
            # Either a concurrent first login committed just now, or the placeholder address
            # is someone else's: only the former binds the key.
            bound = await session.get(LnurlAuthKey, key)
            if bound is None:
                raise _Refusal("cannot open an account for this key") from exc
    owner = await session.get(User, bound.user_id)
    if owner is None or owner.status != "active":
        raise _Refusal("this account is disabled")
    return owner.id


async def _verify_challenge(session: AsyncSession, *, k1: str, key: str) -> None:
    challenge = await session.get(LnurlAuthChallenge, k1, with_for_update=True,
                                  populate_existing=True)
    if challenge is None:
        raise _Refusal("unknown k1")
    if challenge.status != "open":
        raise _Refusal("this k1 was already used")
    now = utcnow()
    if challenge.expires_at <= now:
        raise _Refusal("this login request has expired")
    user_id = await _user_for_key(session, key)
    done = await session.execute(
        update(LnurlAuthChallenge)
        .where(LnurlAuthChallenge.k1 == k1, LnurlAuthChallenge.status == "open")
        .values(status="verified", linking_key=key, user_id=user_id, verified_at=now)
        .execution_options(**_NO_UPDATE_SYNC))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise _Refusal("this k1 was already used")


@router.get("/lnurl-auth/callback", include_in_schema=False,
            dependencies=[PublicCreateLimit])
async def auth_callback(request: Request, tag: str | None = None, k1: str | None = None,
                        sig: str | None = None, key: str | None = None) -> JSONResponse:
    if tag != "login":
        return _lnurl_error("tag must be login")
    if not k1 or not sig or not key:
        return _lnurl_error("k1, sig and key are required")
    k1, key = k1.lower(), key.lower()
    if not _HEX64.fullmatch(k1):
        return _lnurl_error("k1 must be 32 bytes of hex")
    if not verify_login_signature(k1, sig, key):
        return _lnurl_error("bad signature")
    try:
        await retrying(_sessions(request), lambda s: _verify_challenge(s, k1=k1, key=key))
    except _Refusal as exc:
        return _lnurl_error(str(exc))
    except SatvaultError as exc:
        return _lnurl_error(str(exc))
    return _lnurl_ok({"status": "OK"})


@router.post("/lnurl-auth/{k1}/session", response_model=SessionOut, status_code=201,
             dependencies=[PublicCreateLimit],
             responses=problem_responses(403, 409, 410))
async def auth_session(k1: str, body: SessionIn, session: SessionDep,
                       response: Response) -> SessionOut | JSONResponse:
    """Exchange a verified challenge, once and before it expires, for an API key."""
    challenge = await session.get(LnurlAuthChallenge, k1.lower(), with_for_update=True)
    if challenge is None or not hmac.compare_digest(hash_secret(body.session_token),
                                                    challenge.session_hash):
        raise NotFound("no such login request")
    now = utcnow()
    if challenge.status == "consumed":
        return problem(410, "login-used", "this login was already used")
    if challenge.expires_at <= now:
        return problem(410, "login-expired", "this login request has expired")
    if challenge.status != "verified" or challenge.user_id is None:
        return problem(409, "login-pending", "no wallet has signed this login request yet")
    user = await session.get(User, challenge.user_id)
    if user is None or user.status != "active":
        return problem(403, "account-disabled", "this account is disabled")
    done = await session.execute(
        update(LnurlAuthChallenge)
        .where(LnurlAuthChallenge.k1 == challenge.k1, LnurlAuthChallenge.status == "verified")
        .values(status="consumed", consumed_at=now).execution_options(**_NO_UPDATE_SYNC))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return problem(410, "login-used", "this login was already used")
    api_key, token = await create_api_key(
        session, owner_id=user.id, scopes=list(SESSION_SCOPES), label="lnurl-auth login",
        actor=f"lnurl-auth:{(challenge.linking_key or '')[:16]}")
    response.headers["Cache-Control"] = "no-store"
    return SessionOut(api_key=token, key_id=api_key.id, user_id=user.id,
                      scopes=sorted(SESSION_SCOPES))
