"""Sign-up, e-mail verification, password reset, and API access tokens (JWT).

* ``POST /api/v1/auth/signup``: a pending account and its verification mail; the answer is
  the same whether the address was free or not (its owner gets a different mail).
* ``POST /api/v1/auth/verify``: the mailed token makes the account active.
* ``POST /api/v1/auth/password-reset`` and ``…/confirm``: the same answer for any address
  (202 even when the mail could not be sent: a 503 would name the addresses that have one);
  confirming sets the password and signs the user out everywhere.
* ``POST /api/v1/auth/token``: ``grant_type`` ``password`` (e-mail, password, and the TOTP
  or a recovery code when the account has TOTP), ``session`` (the dashboard's ``sv_session``
  cookie plus its CSRF token in ``X-CSRF-Token``) or ``refresh_token``; answers a short-lived
  JWT access token and a refresh token. ``…/token/revoke`` ends a refresh token's family.
  ``withdrawals:write`` needs a step-up, as in the dashboard: a TOTP code or the
  ``payment_password`` in the password grant, a session stepped up within the window.
* ``PUT /api/v1/auth/totp-required/{owner_id}``: an admin requires TOTP of a user or of a
  merchant (its owner).

Failed sign-ins count against the client address (the edge's ``auth-address`` budget) and
the account (progressive lockout in the database); the refusal is answered as a response so
that the count, written in the request's transaction, commits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import User
from satvault.accounts.service import Principal
from satvault.auth import signin, signup, stepup, tokens, totp
from satvault.auth.credentials import AuthPolicy
from satvault.auth.devices import remember_device
from satvault.auth.errors import (
    AccountLocked,
    InvalidCode,
    SameAsPaymentPassword,
)
from satvault.auth.mail import Mail, Mailer
from satvault.auth.models import Credentials
from satvault.auth.sessions import csrf_matches, resolve_session
from satvault.config import Settings
from satvault.kernel.errors import Forbidden, Unauthenticated
from satvault.logs import get_logger
from satvault.web.deps import CurrentPrincipal, SessionDep, require_scope
from satvault.web.fields import STRICT_BODY, SingleLine, StrictBool
from satvault.web.openapi import problem_responses
from satvault.web.problems import problem_for
from satvault.web.ratelimit import EdgeLimiter, PublicCreateLimit
from satvault.web.state import sessions_of, settings_of

__all__ = ["before_signin", "client_ip", "links_for", "mailer_of", "policy_of",
           "reset_after_answer", "router", "send_mail", "signin_failed"]

log = get_logger(__name__)

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
T = TypeVar("T")
Admin = Annotated[Principal, Depends(require_scope("admin"))]


def session_cookie_name(settings: Settings) -> str:
    """The dashboard's session cookie (web.pages.deps.cookie_name, which the API side does
    not import: the pages are built on the routes' helpers, not the other way round)."""
    secure = (settings.session_cookie_secure if settings.session_cookie_secure is not None
              else settings.environment == "production")
    return "__Host-sv_session" if secure else "sv_session"


def mailer_of(request: Request) -> Mailer:
    """The app's mailer (tests may put one on ``app.state.mailer``), built from the
    settings on first use."""
    mailer: Mailer | None = getattr(request.app.state, "mailer", None)
    if mailer is None:
        mailer = Mailer.from_settings(settings_of(request))
        request.app.state.mailer = mailer
    return mailer


async def send_mail(request: Request, mail: Mail | None) -> None:
    """Send after the unit of work committed (never with a transaction open)."""
    if mail is not None:
        await mailer_of(request).send(mail)


def reset_after_answer(background: BackgroundTasks, request: Request, email: str) -> None:
    """Look the address up, issue its reset link and mail it once the answer is out, any
    failure logged: the answer must not tell whether the address has an account (found from
    outside: a reset for a known address waited for the relay, an unknown one did not, so
    one request's time told which addresses have one; then the link's row and audit record,
    written for a known address only, still took ~3 ms more)."""
    async def reset() -> None:
        try:
            async with sessions_of(request)() as session, session.begin():
                mail = await signup.request_password_reset(
                    session, email=email, links=links_for(request), policy=policy_of(request))
            if mail is not None:
                await mailer_of(request).send(mail)
        except Exception as exc:
            log.error("password_reset_not_sent", error=f"{type(exc).__name__}: {exc}"[:300])

    background.add_task(reset)


def policy_of(request: Request) -> AuthPolicy:
    return AuthPolicy.from_settings(settings_of(request))


def links_for(request: Request) -> signup.Links:
    base = settings_of(request).public_url or str(request.base_url)
    return signup.Links(base=base)


def client_ip(request: Request) -> str:
    limiter: EdgeLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        return limiter.client_address(request)
    return request.client.host if request.client else ""


async def before_signin(request: Request) -> None:
    """Refuse (429) an address that used its failed-authentication budget."""
    limiter: EdgeLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        await limiter.before_authentication(request, None)


async def signin_failed(request: Request) -> None:
    limiter: EdgeLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        await limiter.authentication_failed(request, None)


# ------------------------------------------------------------------------- sign-up, reset

class SignUpIn(BaseModel):
    model_config = STRICT_BODY
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=8, max_length=1024)
    display_name: SingleLine = Field(default="", max_length=120)


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    detail: str


@router.post("/signup", status_code=202, dependencies=[PublicCreateLimit],
             responses=problem_responses(503))
async def sign_up(request: Request, body: SignUpIn) -> Accepted:
    async with sessions_of(request)() as session, session.begin():
        mail = await signup.sign_up(session, email=body.email, password=body.password,
                                    display_name=body.display_name, links=links_for(request),
                                    policy=policy_of(request))
    await send_mail(request, mail)
    return Accepted(detail="check your mail: we sent a link to confirm the address")


class TokenIn(BaseModel):
    model_config = STRICT_BODY
    token: str = Field(min_length=1, max_length=200)


class VerifyIn(TokenIn):
    # The password chosen at the sign-up whose link this is (links issued since migration
    # 0080 need it; it becomes the account's).
    password: str | None = Field(default=None, max_length=1024)


class Verified(BaseModel):
    user_id: str
    email: str
    status: str


@router.post("/verify")
async def verify(session: SessionDep, body: VerifyIn) -> Verified:
    user = await signup.verify_email(session, token=body.token, password=body.password)
    return Verified(user_id=user.id, email=user.email, status=user.status.value)


class ResetIn(BaseModel):
    model_config = STRICT_BODY
    email: str = Field(min_length=3, max_length=254)


@router.post("/password-reset", status_code=202, dependencies=[PublicCreateLimit])
async def password_reset(request: Request, body: ResetIn,
                         background: BackgroundTasks) -> Accepted:
    # The same answer, as soon, for every address: found from outside, a failing relay
    # answered 503 for known addresses only, and then a working one made them wait for it.
    # The address is looked up, and mailed, once the answer is out.
    reset_after_answer(background, request, body.email)
    return Accepted(detail="if this address has an account, a reset link is on its way")


class ResetConfirmIn(BaseModel):
    model_config = STRICT_BODY
    token: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=8, max_length=1024)


async def _counted_refusal(request: Request, exc: Exception) -> Response:
    """A refusal counted against the caller's failed-authentication budget and answered
    (not raised), so the request's transaction commits what the refusal wrote."""
    await signin_failed(request)
    refused = problem_for(exc)
    assert refused is not None
    return refused


@router.post("/password-reset/confirm", response_model=Verified,
             responses=problem_responses(422))
async def password_reset_confirm(request: Request, session: SessionDep,
                                 body: ResetConfirmIn) -> Response | Verified:
    try:
        user = await signup.confirm_password_reset(session, token=body.token,
                                                   password=body.password,
                                                   ip=client_ip(request),
                                                   policy=policy_of(request))
    except SameAsPaymentPassword as exc:
        # Answered, not raised: the count and the spent link must commit.
        return await _counted_refusal(request, exc)
    return Verified(user_id=user.id, email=user.email, status=user.status.value)


# ---------------------------------------------------------------------------- tokens

class TokenRequest(BaseModel):
    grant_type: Literal["password", "session", "refresh_token"]
    email: str | None = Field(default=None, max_length=254)
    password: str | None = Field(default=None, max_length=1024)
    totp_code: str | None = Field(default=None, max_length=20,
                                  description="TOTP code or a recovery code, when enrolled.")
    payment_password: str | None = Field(
        default=None, max_length=1024,
        description="The payment password (password grant): a step-up, which "
                    "withdrawals:write needs when the account has no TOTP.")
    refresh_token: str | None = Field(default=None, max_length=200)
    device_token: str | None = Field(
        default=None, max_length=200,
        description="Password grant: the device_token an earlier password grant of this "
                    "client returned. The account's lockout does not hold a known device "
                    "back; its own failures lock it alone.")
    remember_device: StrictBool = Field(
        default=False,
        description="Password grant: return a device_token for this client to send with "
                    "its next password grants (none when the one sent is still known).")
    scopes: list[Annotated[str, Field(max_length=40)]] | None = Field(
        default=None, max_length=20,
        description="Narrow the token to these scopes (default: all the user may hold).")
    merchant_id: str | None = Field(
        default=None, max_length=40,
        description="Act for this merchant (its owner, or an admin: an admin's token sees "
                    "what the merchant sees and moves none of its money).")


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    refresh_token: str
    scope: str
    device_token: str | None = Field(
        default=None, description="A new known-device token (password grant with "
                                  "remember_device): keep it and send it with the next "
                                  "password grants.")


def _out(pair: tokens.TokenPair, device_token: str | None = None) -> TokenOut:
    return TokenOut(access_token=pair.access_token, expires_in=pair.expires_in,
                    refresh_token=pair.refresh_token, scope=" ".join(pair.scopes),
                    device_token=device_token)


async def _password_grant(request: Request, session: AsyncSession,
                          body: TokenRequest) -> tuple[tokens.TokenPair, str | None]:
    """The tokens, and a new known-device token when one was asked for."""
    if not body.email or not body.password:
        raise Unauthenticated("the password grant needs email and password")
    ip, policy = client_ip(request), policy_of(request)
    checked = await signin.check_password(session, email=body.email, password=body.password,
                                          ip=ip, policy=policy, device_token=body.device_token)
    method = "password"
    if checked.needs_second_factor:
        if not body.totp_code:
            raise Unauthenticated("this account has TOTP: send totp_code too")
        await signin.check_second_factor(session, user_id=checked.user.id,
                                         code=body.totp_code, ip=ip, policy=policy,
                                         device=checked.device)
        method = "password+totp"
    if body.payment_password:
        await stepup.check_payment_password(session, user_id=checked.user.id,
                                            payment_password=body.payment_password, ip=ip,
                                            policy=policy)
        method += "+payment-password"
    # A factor beyond the sign-in password, proved in this very request, is the step-up.
    pair = await tokens.issue(session, user=checked.user, scopes=body.scopes,
                              merchant_id=body.merchant_id, method=method,
                              second_factor=checked.needs_second_factor,
                              stepped_up=method != "password", policy=policy)
    await signin.signed_in(session, user_id=checked.user.id, method=f"token:{method}", ip=ip,
                           user_agent=request.headers.get("user-agent", ""))
    device = None
    if checked.device is not None or body.remember_device:
        device = await remember_device(session, user_id=checked.user.id,
                                       device=checked.device)
    return pair, device


async def _session_grant(request: Request, session: AsyncSession, body: TokenRequest,
                         cookie: str | None, csrf: str | None) -> tokens.TokenPair:
    view = await resolve_session(session, cookie)
    if view is None:
        raise Unauthenticated("no live web session")
    if not csrf_matches(view, csrf):
        raise Unauthenticated("the session grant needs the session's CSRF token in "
                              "X-CSRF-Token")
    user = await session.get(User, view.user_id)
    assert user is not None
    return await tokens.issue(session, user=user, scopes=body.scopes,
                              merchant_id=body.merchant_id, session_id=view.id,
                              method="session", second_factor=view.mfa_verified,
                              stepped_up=stepup.is_stepped_up(view), policy=policy_of(request))


@router.post("/token", response_model=TokenOut, responses=problem_responses(401, 403, 404))
async def token(
    request: Request, session: SessionDep, body: TokenRequest,
    x_csrf_token: Annotated[str | None, Header(
        max_length=200, description="The web session's CSRF token (session grant).")] = None,
) -> Response | TokenOut:
    await before_signin(request)
    device = None
    try:
        if body.grant_type == "password":
            pair, device = await _password_grant(request, session, body)
        elif body.grant_type == "session":
            cookie = request.cookies.get(session_cookie_name(settings_of(request)))
            pair = await _session_grant(request, session, body, cookie, x_csrf_token)
        else:
            pair = await tokens.refresh(session, refresh_token=body.refresh_token or "",
                                        policy=policy_of(request))
    except Unauthenticated as exc:
        # Answered, not raised: the failure count and a reuse's revocation must commit.
        return await _counted_refusal(request, exc)
    return _out(pair, device)


class RevokeIn(BaseModel):
    model_config = STRICT_BODY
    refresh_token: str = Field(min_length=1, max_length=200)


@router.post("/token/revoke", status_code=204, response_class=Response)
async def revoke(session: SessionDep, body: RevokeIn) -> Response:
    """End the family of this refresh token (sign-out of an API client). An unknown token
    is not an error (RFC 7009)."""
    family_id = await tokens.family_of(session, body.refresh_token)
    if family_id is not None:
        await tokens.revoke_family(session, family_id=family_id, reason="revoked-by-client",
                                   actor="client")
    return Response(status_code=204)


# ------------------------------------------------------------------------------- admin

class RequiredIn(BaseModel):
    model_config = STRICT_BODY

    required: StrictBool


class RequiredOut(BaseModel):
    user_id: str
    totp_required: bool
    totp_enabled: bool


# ------------------------------------------------------------------ a user's own TOTP

class TotpStatusOut(BaseModel):
    totp_enabled: bool
    totp_required: bool


class TotpEnrollmentOut(BaseModel):
    """The pending secret: for an authenticator app, as text, as an ``otpauth://`` URI and as
    an SVG QR code of that URI. TOTP is on once a code from it is confirmed."""

    secret: str
    otpauth_uri: str
    qr_svg: str


class TotpCodeIn(BaseModel):
    model_config = STRICT_BODY
    code: str = Field(min_length=6, max_length=64,
                      description="a current code from the app (or, to turn TOTP off, a "
                                  "recovery code)")


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str] = Field(description="one-time codes, shown this once")


def _own_user(principal: Principal) -> str:
    """The user behind a user's access token. A long-lived API key is refused: whoever holds
    one must not be able to put a second factor on its owner's sign-in (and lock them out)."""
    if principal.owner_type != "user" or not principal.key_id.startswith("jwt:"):
        raise Forbidden("two-factor settings need a user's access token "
                        "(POST /api/v1/auth/token), not an API key")
    return principal.owner_id


async def _totp_status(session: AsyncSession, user_id: str) -> TotpStatusOut:
    creds = await session.get(Credentials, user_id)  # none yet: never enrolled
    return TotpStatusOut(totp_enabled=totp.totp_enabled(creds),
                         totp_required=bool(creds and creds.totp_required))


@router.get("/totp", responses=problem_responses(401, 403))
async def totp_status(session: SessionDep, principal: CurrentPrincipal) -> TotpStatusOut:
    """Whether the caller's sign-in has TOTP, and whether an admin requires it."""
    return await _totp_status(session, _own_user(principal))


class TotpBeginIn(BaseModel):
    model_config = STRICT_BODY
    password: str | None = Field(
        None, max_length=1024,
        description="the sign-in password; needed when the token's sign-in is more than "
                    "ten minutes old")


@router.post("/totp", status_code=201, response_model=TotpEnrollmentOut,
             responses=problem_responses(401, 403, 422, 429))
async def totp_begin(request: Request, session: SessionDep, principal: CurrentPrincipal,
                     body: TotpBeginIn | None = None) -> TotpEnrollmentOut | Response:
    """Start (or restart) enrolling TOTP: a new secret, pending until confirmed. The token's
    sign-in must be less than ten minutes old, or the sign-in ``password`` given (a wrong one
    counts towards the lockout); else 403."""
    user_id = _own_user(principal)
    try:
        started = await stepup.begin_totp_enrollment(
            session, user_id=user_id,
            signed_in_at=await tokens.signed_in_at(session, principal.key_id.removeprefix(
                "jwt:")),
            password=body.password if body is not None else None, ip=client_ip(request),
            policy=policy_of(request))
    except Unauthenticated as exc:  # a counted guess: answered, so the count commits
        await signin_failed(request)
        refused = problem_for(exc)
        assert refused is not None
        return refused
    return TotpEnrollmentOut(secret=started.secret, otpauth_uri=started.uri,
                             qr_svg=started.qr_svg)


async def _guessed(request: Request, attempt: Callable[[], Awaitable[T]]) -> T | Response:
    """Run ``attempt``, which checks a TOTP or recovery code (the service refuses while the
    account is locked out and counts a wrong code towards the lockout); a wrong code spends
    the address's failed-authentication budget too. The refusal is answered, not raised, so
    the count commits."""
    try:
        return await attempt()
    except InvalidCode as exc:
        await signin_failed(request)
        refused = problem_for(exc)
    except AccountLocked as exc:
        refused = problem_for(exc)
    assert refused is not None
    return refused


@router.post("/totp/confirm", response_model=RecoveryCodesOut,
             responses=problem_responses(401, 403, 422, 429))
async def totp_confirm(request: Request, session: SessionDep, principal: CurrentPrincipal,
                       body: TotpCodeIn) -> RecoveryCodesOut | Response:
    """Turn TOTP on with a code from the pending secret; answers the recovery codes once."""
    user_id = _own_user(principal)

    async def confirm() -> RecoveryCodesOut:
        return RecoveryCodesOut(recovery_codes=await totp.confirm_enrollment(
            session, user_id=user_id, code=body.code, policy=policy_of(request),
            ip=client_ip(request)))

    return await _guessed(request, confirm)


@router.post("/totp/disable", response_model=TotpStatusOut,
             responses=problem_responses(401, 403, 422, 429))
async def totp_disable(request: Request, session: SessionDep, principal: CurrentPrincipal,
                       body: TotpCodeIn) -> TotpStatusOut | Response:
    """Turn TOTP off with a current code or a recovery code. Refused (403) while TOTP is
    required of this user (an admin, or marked by one)."""
    user_id = _own_user(principal)

    async def disable() -> TotpStatusOut:
        await totp.disable(session, user_id=user_id, code=body.code, actor=user_id,
                           policy=policy_of(request), ip=client_ip(request))
        return await _totp_status(session, user_id)

    return await _guessed(request, disable)


@router.put("/totp-required/{owner_id}")
async def require_totp(session: SessionDep, admin: Admin, owner_id: str,
                       body: RequiredIn) -> RequiredOut:
    """Require TOTP of a user (``usr_…``) or of a merchant's owner (``mer_…``)."""
    user = await totp.set_required(session, owner_id=owner_id, required=body.required,
                                   actor=admin.owner_id)
    creds = (await session.execute(select(Credentials).where(Credentials.user_id == user.id))
             ).scalar_one()
    return RequiredOut(user_id=user.id, totp_required=creds.totp_required,
                       totp_enabled=creds.totp_enabled)
