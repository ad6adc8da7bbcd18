"""LNURL endpoints: Lightning Addresses, withdraw vouchers and LNURL-auth logins (the
services are :mod:`satvault.lightning.lnurl_service`'s and, for logins,
:mod:`satvault.lightning.lnurl_auth`'s).

Each has a wallet-facing half (plain GETs answered the LNURL way: HTTP 200 with
``{"status": "ERROR", "reason": …}`` on refusal, ``Access-Control-Allow-Origin: *``, LUD-01)
and an owner-facing half under ``/api/v1`` (API keys, problem+json).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.access import held_wallet, visible_wallet
from satvault.accounts.service import Principal
from satvault.auth.credentials import AuthPolicy
from satvault.auth.errors import AccountLocked, InvalidCode, SecondFactorNeeded
from satvault.backends.errors import BackendError
from satvault.config import Settings
from satvault.db import utcnow
from satvault.kernel.errors import SatvaultError
from satvault.kyc.errors import KycError
from satvault.lightning import lnurl_auth
from satvault.lightning import lnurl_service as svc
from satvault.lightning.lnurl import encode_lnurl
from satvault.lightning.lnurl_models import LightningAddress, LnurlWithdrawVoucher
from satvault.lightning.vouchers import failed_withdrawals, refusal
from satvault.logs import get_logger
from satvault.risk import RiskRejected
from satvault.risk.errors import RiskError
from satvault.web.deps import OptionalIdempotencyKey, SessionDep, SettingsDep, require_scope
from satvault.web.fields import STRICT_BODY, Memo, Msat, StrictInt
from satvault.web.idempotency import run_idempotent
from satvault.web.openapi import problem_responses
from satvault.web.problems import LNURL_CORS, lnurl_error, problem, problem_for
from satvault.web.ratelimit import CreateLimit, PublicCreateLimit, PublicLimit
from satvault.web.routes.auth import before_signin, client_ip, signin_failed
from satvault.web.state import (
    invoice_follow_up_of,
    lightning_of,
    payer_wake_of,
    sessions_of,
    settings_of,
)
from satvault.withdrawals.policy.errors import PolicyError
from satvault.withdrawals.policy.service import initiator_of_principal
from satvault.withdrawals.refused import cancel_refused
from satvault.withdrawals.service import policy_before_node, voucher_withdrawal

__all__ = ["address_out", "router", "voucher_out"]

log = get_logger(__name__)
router = APIRouter(tags=["lnurl"],
                   # a node or the ledger busy, unreachable or not set up
                   responses=problem_responses(503))
WalletReader = Annotated[Principal, Depends(require_scope("wallet:read"))]
WalletWriter = Annotated[Principal, Depends(require_scope("wallet:write"))]
Withdrawer = Annotated[Principal, Depends(require_scope("withdrawals:write"))]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_VOUCHER_SECONDS = 10 * 366 * 86_400  # ten years: longer is "never"
# How a refused login exchange is answered (status, problem type).
_LOGIN_PROBLEMS = {"used": (410, "login-used"), "expired": (410, "login-expired"),
                   "pending": (409, "login-pending"), "disabled": (403, "account-disabled")}


# ------------------------------------------------------------------------------------ helpers

# What an anonymous redeemer is told when the owner's side refuses: the wallet's freeze and its
# reason, the owner's KYC tier and limits, a risk decision and the withdrawal policy's rules
# are the owner's and the operator's business (found from outside: a voucher holder read an
# admin's freeze reason and the owner's tier limits). The log keeps the detail.
_OWNER_SIDE = (KycError, RiskError, PolicyError)
_CANNOT_REDEEM = ("this withdraw link cannot be redeemed right now; ask whoever gave it to "
                  "you")


def _payer_reason(exc: SatvaultError, event: str, **where: str | None) -> str:
    """The reason a public LNURL callback may give for ``exc``: its own text when it is
    about what the wallet sent (amount, invoice, state of the link), a generic one when it is
    the owner's side refusing (logged as ``event`` with the detail)."""
    if isinstance(exc, _OWNER_SIDE):
        log.info(event, error=str(exc), kind=type(exc).__name__, **where)
        return _CANNOT_REDEEM
    return str(exc)


def _lnurl_ok(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=LNURL_CORS)


def _parse_msat(value: str | None) -> int | None:
    ok = value is not None and value.isascii() and value.isdigit() and len(value) <= 18
    return int(value) if ok and value is not None else None


# ----------------------------------------------------------------------- Lightning Addresses

class AddressIn(BaseModel):
    model_config = STRICT_BODY
    username: str = Field(min_length=1, max_length=64, pattern=r"^[ \t]*[A-Za-z0-9._-]+[ \t]*$",
                          description="Stored lower-case, without surrounding blanks.")


class AddressOut(BaseModel):
    username: str
    wallet_id: str
    address: str
    lnurl: str


def address_out(row: LightningAddress, settings: Settings) -> AddressOut:
    return AddressOut(username=row.username, wallet_id=row.wallet_id,
                      address=f"{row.username}@{svc.host(settings)}",
                      lnurl=encode_lnurl(f"{svc.base_url(settings)}/.well-known/lnurlp/"
                                         f"{row.username}"))


@router.post("/api/v1/wallets/{wallet_id}/lightning-address", response_model=AddressOut,
             status_code=201, dependencies=[CreateLimit],
             responses=problem_responses(409))  # the username is taken
async def claim_address(wallet_id: str, body: AddressIn, session: SessionDep,
                        settings: SettingsDep, principal: WalletWriter) -> AddressOut:
    wallet = await visible_wallet(session, principal, wallet_id)
    row = await svc.claim_address(session, wallet=wallet, username=body.username,
                                  actor=f"key:{principal.key_id}")
    return address_out(row, settings)


@router.get("/.well-known/lnurlp/{username}", include_in_schema=False,
            dependencies=[PublicLimit])
async def pay_request(username: str, request: Request, session: SessionDep,
                      settings: SettingsDep) -> JSONResponse:
    name = svc.address_name(username)
    if name is None or await session.get(LightningAddress, name) is None:
        return lnurl_error("unknown Lightning Address")
    if lightning_of(request) is None:
        return lnurl_error("Lightning payments are not available here right now")
    return _lnurl_ok({
        "tag": "payRequest",
        "callback": f"{svc.base_url(settings)}/lnurlp/{name}/callback",
        "minSendable": svc.MIN_SENDABLE_MSAT,
        "maxSendable": settings.ln_max_payment_msat,
        "metadata": svc.address_metadata(name, svc.host(settings)),
        "commentAllowed": svc.COMMENT_ALLOWED,
    })


@router.get("/lnurlp/{username}/callback", include_in_schema=False,
            dependencies=[PublicCreateLimit])
async def pay_callback(username: str, request: Request, amount: str | None = None,
                       comment: str | None = None) -> JSONResponse:
    backend = lightning_of(request)
    msat = _parse_msat(amount)
    if backend is None:
        return lnurl_error("Lightning payments are not available here right now")
    if msat is None:
        return lnurl_error("amount (in millisatoshis) is required")
    try:
        pr = await svc.address_invoice(sessions_of(request), backend=backend,
                                       settings=settings_of(request), username=username,
                                       amount_msat=msat, comment=comment)
    except svc.Refused as exc:
        return lnurl_error(str(exc))
    except BackendError as exc:  # before SatvaultError: a node's text is not for the payer
        log.warning("lnurlp_invoice_failed", username=svc.address_name(username),
                    error=str(exc))
        return lnurl_error("could not create an invoice right now; try again")
    except SatvaultError as exc:
        return lnurl_error(_payer_reason(exc, "lnurlp_invoice_refused",
                                          username=svc.address_name(username)))
    return _lnurl_ok({"pr": pr, "routes": [],
                      "successAction": {"tag": "message", "message": svc.SUCCESS_MESSAGE}})


# -------------------------------------------------------------------------- withdraw vouchers

class VoucherIn(BaseModel):
    model_config = STRICT_BODY
    amount_msat: Msat = Field(description="the most the holder may withdraw")
    min_msat: Msat | None = Field(None, description="the least (default: amount_msat)")
    description: Memo = ""
    expires_in: StrictInt | None = Field(
        None, ge=60, le=_MAX_VOUCHER_SECONDS,
        description="seconds until the voucher expires (default: "
                    "SATVAULT_VOUCHER_DEFAULT_LIFETIME_DAYS, 30 days; at most "
                    "SATVAULT_VOUCHER_MAX_LIFETIME_DAYS, 366); then its hold is released")
    expires_at: datetime | None = Field(
        None, description="when the voucher expires, instead of expires_in (UTC if no zone "
                          "is given; at least a minute ahead)")

    def lifetime(self) -> timedelta | None:
        return None if self.expires_in is None else timedelta(seconds=self.expires_in)


class VoucherExpiryIn(BaseModel):
    model_config = STRICT_BODY

    expires_in: StrictInt | None = Field(
        None, ge=60, le=_MAX_VOUCHER_SECONDS, description="seconds from now")
    expires_at: datetime | None = Field(
        None, description="instead of expires_in (UTC if no zone is given)")

    def lifetime(self) -> timedelta | None:
        return None if self.expires_in is None else timedelta(seconds=self.expires_in)


class VoucherOut(BaseModel):
    id: str = Field(description="the voucher's handle for this API; it does not open the "
                                "voucher")
    wallet_id: str
    lnurl: str | None = Field(description="the withdraw link, in the creation answer only "
                                          "(only its hash is stored); null afterwards")
    amount_msat: int
    min_msat: int
    held_msat: int
    description: str
    status: str
    withdrawal_id: str | None
    expires_at: datetime | None = Field(description="when the voucher expires; null: never")
    failed_withdrawal_ids: list[str] = Field(
        default_factory=list,
        description="withdrawals of this voucher that failed, oldest first; after each the "
                    "voucher opened again")
    created_at: datetime


def voucher_out(v: LnurlWithdrawVoucher, settings: Settings, token: str | None = None,
                failed: list[str] | None = None) -> VoucherOut:
    """The voucher as the API shows it; its ``lnurl`` only when given the link ``token``."""
    lnurl = encode_lnurl(svc.voucher_link(settings, token)) if token is not None else None
    return VoucherOut(id=v.id, wallet_id=v.wallet_id, lnurl=lnurl,
                      amount_msat=v.amount_msat, min_msat=v.min_msat,
                      held_msat=v.amount_msat + v.reserve_msat, description=v.description,
                      status=v.status, withdrawal_id=v.withdrawal_id,
                      expires_at=v.expires_at, failed_withdrawal_ids=failed or [],
                      created_at=v.created_at)


@router.post("/api/v1/wallets/{wallet_id}/lnurl-withdraw", response_model=VoucherOut,
             status_code=201, dependencies=[CreateLimit])
async def create_voucher(
    wallet_id: str, body: VoucherIn, request: Request, principal: Withdrawer,
    idempotency_key: OptionalIdempotencyKey = None,
) -> JSONResponse:
    """Hold the amount and return a single-use LNURL-withdraw, whose link is in this answer
    only. ``Idempotency-Key`` optional: a replay answers the same voucher with
    ``lnurl: null`` (the stored answer keeps no secret)."""
    settings = settings_of(request)
    made: dict[str, str] = {}

    async def work(session: AsyncSession) -> tuple[int, Any]:
        wallet = await held_wallet(session, principal, wallet_id)
        voucher, made["token"] = await svc.open_voucher(
            session, wallet=wallet, amount_msat=body.amount_msat, min_msat=body.min_msat,
            description=body.description, settings=settings, actor=f"key:{principal.key_id}",
            initiator=await initiator_of_principal(session, principal),
            expires_at=body.expires_at, expires_in=body.lifetime())
        return 201, voucher_out(voucher, settings).model_dump(mode="json")

    if idempotency_key:
        answer = await run_idempotent(request, owner=f"{principal.owner_type}:"
                                      f"{principal.owner_id}", key=idempotency_key, work=work)
        if "token" not in made or answer.status_code != 201:
            return answer  # a replay, or a refusal
        payload = json.loads(bytes(answer.body))
    else:
        async with sessions_of(request)() as s, s.begin():
            _, payload = await work(s)
    # Added after the commit, to this answer alone: the idempotency store keeps none of it.
    payload["lnurl"] = encode_lnurl(svc.voucher_link(settings, made["token"]))
    return JSONResponse(payload, status_code=201)


@router.get("/api/v1/lnurl-withdraw/{voucher_id}", response_model=VoucherOut)
async def get_voucher(voucher_id: str, session: SessionDep, settings: SettingsDep,
                      principal: WalletReader) -> VoucherOut:
    voucher = await svc.visible_voucher(session, principal, voucher_id)
    return voucher_out(voucher, settings,
                       failed=await failed_withdrawals(session, voucher.id))


@router.delete("/api/v1/lnurl-withdraw/{voucher_id}", response_model=VoucherOut,
               responses=problem_responses(409))  # used or canceled already
async def cancel_voucher(voucher_id: str, session: SessionDep, settings: SettingsDep,
                         principal: Withdrawer) -> VoucherOut | JSONResponse:
    """Cancel an unused voucher and release its hold; a used or canceled one is a 409."""
    voucher = await svc.visible_voucher(session, principal, voucher_id)
    if not await svc.cancel_voucher(session, voucher, actor=f"key:{principal.key_id}"):
        return problem(409, "voucher-not-open", f"voucher {voucher_id!r} is {voucher.status}")
    return voucher_out(voucher, settings,
                       failed=await failed_withdrawals(session, voucher.id))


@router.patch("/api/v1/lnurl-withdraw/{voucher_id}", response_model=VoucherOut,
              responses=problem_responses(409))  # used, canceled or expired
async def set_voucher_expiry(voucher_id: str, body: VoucherExpiryIn, session: SessionDep,
                             settings: SettingsDep,
                             principal: Withdrawer) -> VoucherOut | JSONResponse:
    """Give an open voucher a new expiry, sooner or later (within the maximum lifetime from
    now; audited). One that is used, canceled or past its expiry is a 409."""
    voucher = await svc.visible_voucher(session, principal, voucher_id)
    if not await svc.set_voucher_expiry(session, voucher, settings=settings,
                                        actor=f"key:{principal.key_id}",
                                        expires_at=body.expires_at, expires_in=body.lifetime()):
        state = "expired" if voucher.status == "open" else voucher.status
        return problem(409, "voucher-not-open", f"voucher {voucher_id!r} is {state}")
    return voucher_out(voucher, settings,
                       failed=await failed_withdrawals(session, voucher.id))


@router.get("/lnurlw/{link_token}", include_in_schema=False, dependencies=[PublicLimit])
async def withdraw_request(link_token: str, session: SessionDep,
                           settings: SettingsDep) -> JSONResponse:
    voucher = await svc.voucher_by_link(session, link_token)
    if voucher is None:
        return lnurl_error("unknown withdraw link")
    reason = refusal(voucher, utcnow())
    if reason is not None:
        return lnurl_error(reason)
    return _lnurl_ok({
        "tag": "withdrawRequest",
        "callback": f"{svc.voucher_link(settings, link_token)}/callback",
        "k1": voucher.k1,
        "defaultDescription": voucher.description,
        "minWithdrawable": voucher.min_msat,
        "maxWithdrawable": voucher.amount_msat,
    })


@router.get("/lnurlw/{link_token}/callback", include_in_schema=False,
            dependencies=[PublicCreateLimit])
async def withdraw_callback(link_token: str, request: Request, k1: str | None = None,
                            pr: str | None = None) -> JSONResponse:
    backend = lightning_of(request)
    if not k1 or not pr:
        return lnurl_error("k1 and pr are required")
    if backend is None:
        return lnurl_error("Lightning payments are not available here right now")
    async with sessions_of(request)() as s:
        voucher = await svc.voucher_by_link(s, link_token)
        voucher_id = voucher.id if voucher is not None else None
    if voucher_id is None:
        return lnurl_error("unknown withdraw link or wrong k1")
    # From here on the voucher is named by its id (logs): the token opens it, the id does not.
    try:
        withdrawal_id = await svc.redeem_voucher(
            sessions_of(request), voucher_id=voucher_id, k1=k1, pr=pr,
            settings=settings_of(request), backend=backend,
            payer_wake=payer_wake_of(request),
            request=voucher_withdrawal(settings=settings_of(request), lightning=backend),
            before_node=policy_before_node,
            on_refused=lambda payment_hash, payer: cancel_refused(
                sessions_of(request), payment_hash, payer=payer,
                follow_up=invoice_follow_up_of(request)))
    except svc.Refused as exc:
        return lnurl_error(str(exc))
    except RiskRejected as exc:  # the voucher stays open, its hold kept; the decision stored
        async with sessions_of(request)() as s, s.begin():
            await exc.record_after_rollback(s)
        return lnurl_error(_payer_reason(exc, "lnurlw_redeem_refused", voucher=voucher_id))
    except BackendError as exc:  # before SatvaultError: a node's text is not for the payer
        log.warning("lnurlw_redeem_failed", voucher=voucher_id, error=str(exc))
        return lnurl_error("the node is not available right now; try again")
    except SatvaultError as exc:
        return lnurl_error(_payer_reason(exc, "lnurlw_redeem_refused", voucher=voucher_id))
    log.info("lnurlw_redeemed", voucher=voucher_id, withdrawal=withdrawal_id)
    return _lnurl_ok({"status": "OK"})


# ------------------------------------------------------------------------------ LNURL-auth

class ChallengeOut(BaseModel):
    k1: str
    lnurl: str
    session_token: str = Field(description="secret for POST /lnurl-auth/{k1}/session; "
                                           "keep it in the browser that shows the QR code")
    expires_at: datetime


class SessionIn(BaseModel):
    model_config = STRICT_BODY
    session_token: str = Field(min_length=1, max_length=200)
    totp: str | None = Field(
        default=None, max_length=20,
        description="A current TOTP code (or a recovery code), when the account has TOTP.")


class SessionOut(BaseModel):
    """What a password + TOTP sign-in gets from ``POST /api/v1/auth/token``, and the user."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    refresh_token: str
    scope: str
    user_id: str
    scopes: list[str]
    api_key: str = Field(description="Deprecated: the access token again, for clients "
                                     "written when a login returned an API key.")
    key_id: str = Field(description="Deprecated: the token family's id.")
    totp_enrollment_required: bool = Field(
        default=False,
        description="The account must have TOTP and has none: this family has no scope and "
                    "is not refreshed; its only use is POST /api/v1/auth/totp and "
                    "/api/v1/auth/totp/confirm, then a new login with a code.")


@router.get("/lnurl-auth/challenge", response_model=ChallengeOut,
            dependencies=[PublicCreateLimit])
async def auth_challenge(session: SessionDep, settings: SettingsDep,
                         response: Response) -> ChallengeOut:
    challenge = await lnurl_auth.new_challenge(session, settings=settings)
    response.headers["Cache-Control"] = "no-store"
    return ChallengeOut(k1=challenge.k1, lnurl=challenge.lnurl,
                        session_token=challenge.session_token,
                        expires_at=challenge.expires_at)


@router.get("/lnurl-auth/callback", include_in_schema=False,
            dependencies=[PublicCreateLimit])
async def auth_callback(request: Request, tag: str | None = None, k1: str | None = None,
                        sig: str | None = None, key: str | None = None) -> JSONResponse:
    if tag != "login":
        return lnurl_error("tag must be login")
    if not k1 or not sig or not key:
        return lnurl_error("k1, sig and key are required")
    k1, sig, key = k1.lower(), sig.lower(), key.lower()  # hex in either case (LUD-04)
    if not _HEX64.fullmatch(k1):
        return lnurl_error("k1 must be 32 bytes of hex")
    if not lnurl_auth.verify_login_signature(k1, sig, key):
        return lnurl_error("bad signature")
    try:
        await lnurl_auth.verify_login(sessions_of(request), k1=k1, key=key)
    except svc.Refused as exc:
        return lnurl_error(str(exc))
    except SatvaultError as exc:
        return lnurl_error(str(exc))
    return _lnurl_ok({"status": "OK"})


@router.post("/lnurl-auth/{k1}/session", response_model=SessionOut, status_code=201,
             dependencies=[PublicCreateLimit],
             responses=problem_responses(401, 403, 409, 410))
async def auth_session(k1: str, body: SessionIn, request: Request, session: SessionDep,
                       settings: SettingsDep, response: Response) -> SessionOut | JSONResponse:
    """Exchange a verified challenge, once and before it expires, for a token family; with
    a current TOTP code (``totp``) when the account has TOTP."""
    if body.totp:  # a guess: not from an address that failed too often
        await before_signin(request)
    try:
        login = await lnurl_auth.exchange_login(session, k1=k1, session_token=body.session_token,
                                         totp_code=body.totp, ip=client_ip(request),
                                         policy=AuthPolicy.from_settings(settings))
    except lnurl_auth.LoginRefused as exc:
        status, kind = _LOGIN_PROBLEMS[exc.reason]
        return problem(status, kind, str(exc))
    except (SecondFactorNeeded, InvalidCode, AccountLocked) as exc:
        if isinstance(exc, InvalidCode):
            await signin_failed(request)
        # Answered, not raised: a wrong code's count commits (the challenge stays verified).
        refused = problem_for(exc)
        assert refused is not None
        return refused
    response.headers["Cache-Control"] = "no-store"
    pair = login.pair
    return SessionOut(access_token=pair.access_token, expires_in=pair.expires_in,
                      refresh_token=pair.refresh_token, scope=" ".join(pair.scopes),
                      user_id=login.user.id, scopes=sorted(pair.scopes),
                      api_key=pair.access_token, key_id=pair.family_id,
                      totp_enrollment_required=login.enroll_only)
