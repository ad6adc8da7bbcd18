"""The sign-in pages around ``/login``: sign-up and "check your mail", the verification link's
landing, password reset (request and confirm), the TOTP step after the password, TOTP
enrollment (QR and recovery codes, shown once), the security page (sessions, sign out
everywhere, password, payment password, TOTP off) and the step-up form for money actions.

Every form carries a CSRF token: the session's once signed in, the double-submit cookie's
before (:mod:`.deps`). A mailed link opens a page with a button; only the button's POST
spends the token (mail scanners that fetch links spend nothing).

The half-signed-in state: a right password for a user with TOTP makes no session, only a
challenge whose token sits in the HTTP-only ``sv_challenge`` cookie (``SameSite=Strict``,
path ``/login``); the TOTP form trades it and a valid code for a session. Every sign-in makes
a new session id, and the session the browser had before is revoked (fixation).

A completed sign-in leaves the browser a known-device token (:mod:`satvault.auth.devices`)
in the HTTP-only ``sv_device`` cookie (``SameSite=Strict``, path ``/login``, a year): the
account's lock, which anyone can keep on with a wrong password an hour, does not hold that
browser back; its own failures lock it alone.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import User
from satvault.accounts.security import verify_password_async
from satvault.audit.service import record
from satvault.auth import signin, signup, stepup, totp
from satvault.auth.credentials import credentials, is_locked
from satvault.auth.devices import known_device, remember_device
from satvault.auth.errors import (
    AccountLocked,
    InvalidCode,
    MailUnavailable,
    SameAsPaymentPassword,
)
from satvault.auth.models import Credentials
from satvault.auth.passwords import set_password
from satvault.auth.revocation import revoke_everything
from satvault.auth.sessions import (
    SessionView,
    list_sessions,
    mark_mfa,
    resolve_session,
    revoke_session,
    start_session,
)
from satvault.checkout.i18n import Language
from satvault.config import Settings
from satvault.kernel.clock import utcnow
from satvault.kernel.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from satvault.kernel.errors import StepUpRequired as StepUpNeeded
from satvault.web.pages.deps import (
    ENROLL_PATH,
    CsrfProtected,
    PageLang,
    PageUser,
    PreSessionCsrf,
    StepUpRequired,
    cookie_name,
    cookie_secure,
    mark_page,
    new_pre_session_csrf,
    safe_next,
    set_pre_session_csrf,
    set_session_cookie,
)
from satvault.web.pages.render import render
from satvault.web.ratelimit import PublicCreateLimit
from satvault.web.routes.auth import (
    before_signin,
    client_ip,
    links_for,
    mailer_of,
    policy_of,
    reset_after_answer,
    signin_failed,
)

# Also what an address still pending hears (no enumeration: auth.signin).
_WRONG = "Wrong e-mail or password, or the address is not confirmed yet."

__all__ = ["CHALLENGE_COOKIE", "SignInBudget", "password_sign_in", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_page)])
CHALLENGE_COOKIE = "sv_challenge"
_DEVICE_DAYS = 365
# The signed-out forms that check a password or a code, like the API's token endpoint: an
# address that used its failed-authentication budget is refused (429) before anything is
# checked. Every form that checks one counts its failures against that budget
# (``signin_failed``), signed in or not (found from outside: the pages did neither, so
# password spraying through /login was bounded only by each account's lockout).
SignInBudget = Depends(before_signin)


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _signed_out_page(request: Request, template: str, *, lang: Language,
                     status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page with a signed-out form: the double-submit CSRF cookie set beside it."""
    token = new_pre_session_csrf(request)
    response = render(request, template, lang=lang, form_csrf=token, status_code=status_code,
                      **context)
    set_pre_session_csrf(response, _settings(request), token)
    return response


def _home(is_admin: bool) -> str:
    return "/admin" if is_admin else "/dashboard"


def _device_cookie(settings: Settings) -> str:
    return "__Secure-sv_device" if cookie_secure(settings) else "sv_device"


def _device_token(request: Request) -> str | None:
    return request.cookies.get(_device_cookie(_settings(request))) or None


def _keep_device(response: Response, settings: Settings, token: str | None) -> None:
    """The known-device cookie, when the sign-in made a new device."""
    if token is not None:
        response.set_cookie(_device_cookie(settings), token, httponly=True, samesite="strict",
                            secure=cookie_secure(settings), path="/login",
                            max_age=_DEVICE_DAYS * 86400)


async def _begin_session(request: Request, session: AsyncSession, *, user: User,
                         mfa: bool, method: str) -> str:
    """A new session (new id: fixation) after the old one of this browser is revoked."""
    ip, agent = client_ip(request), request.headers.get("user-agent", "")
    old = await resolve_session(session, request.cookies.get(cookie_name(_settings(request))))
    if old is not None:
        await revoke_session(session, user_id=old.user_id, session_id=old.id,
                             actor=user.id, reason="signed in again")
    _row, token = await start_session(session, user_id=user.id, user_agent=agent, ip=ip,
                                      mfa=mfa)
    await signin.signed_in(session, user_id=user.id, method=method, ip=ip, user_agent=agent)
    return token


async def password_sign_in(request: Request, *, lang: Language, email: str, password: str,
                           next_path: str) -> Response | str:
    """The ``/login`` form's work: a redirect (signed in, or on to the TOTP step), or the
    error to show on the form. Failures are committed (they count towards the lockout)."""
    settings = _settings(request)
    challenge = token = device = None
    try:
        async with _sessions(request)() as session, session.begin():
            try:
                checked = await signin.check_password(
                    session, email=email, password=password, ip=client_ip(request),
                    policy=policy_of(request), device_token=_device_token(request))
            except Unauthenticated as exc:
                failure: Unauthenticated | None = exc
            else:
                failure = None
                user = checked.user
                if checked.needs_second_factor:
                    challenge = await signin.start_challenge(
                        session, user_id=user.id, ip=client_ip(request),
                        user_agent=request.headers.get("user-agent", ""),
                        policy=policy_of(request), device=checked.device)
                else:
                    token = await _begin_session(request, session, user=user, mfa=False,
                                                 method="password")
                    device = await remember_device(session, user_id=user.id,
                                                   device=checked.device)
                    enroll = await totp.must_enroll(session, user_id=user.id)
    except InvalidInput:
        await signin_failed(request)
        return _WRONG
    if failure is not None:
        await signin_failed(request)
        if isinstance(failure, AccountLocked):
            return "Too many failed attempts. Try again later."
        if "suspended" in str(failure):
            return "This account is suspended."
        return _WRONG
    if challenge is not None:
        response = RedirectResponse(
            f"/login/totp?next={quote(safe_next(next_path, ''), safe='/')}", status_code=303)
        response.set_cookie(CHALLENGE_COOKIE, challenge, httponly=True, samesite="strict",
                            secure=cookie_secure(settings), path="/login")
        return response
    assert token is not None
    target = ENROLL_PATH if enroll else safe_next(next_path, _home(user.is_admin))
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, settings, token)
    _keep_device(response, settings, device)
    return response


# ------------------------------------------------------------------------ the TOTP step

@router.get("/login/totp", response_class=HTMLResponse)
async def totp_step_page(request: Request, lang: PageLang, next: str = "") -> Response:
    if not request.cookies.get(CHALLENGE_COOKIE):
        return RedirectResponse("/login", status_code=303)
    return _signed_out_page(request, "auth/totp_step.html", lang=lang, next=safe_next(next, ""),
                            error=None)


@router.post("/login/totp", response_class=HTMLResponse,
             dependencies=[PreSessionCsrf, SignInBudget])
async def totp_step(request: Request, lang: PageLang,
                    code: Annotated[str, Form(max_length=20)],
                    next: Annotated[str, Form(max_length=500)] = "") -> Response:
    challenge = request.cookies.get(CHALLENGE_COOKIE, "")
    token = error = device = None
    user: User | None = None
    async with _sessions(request)() as session, session.begin():
        try:
            passed = await signin.pass_challenge(session, token=challenge, code=code,
                                                 ip=client_ip(request),
                                                 policy=policy_of(request))
        except AccountLocked:
            error = "Too many failed attempts. Try again later."
        except Unauthenticated as exc:
            error = ("This sign-in has expired. Start again with your password."
                     if "expired" in str(exc) else "That code is not right.")
        else:
            user = await session.get(User, passed.user_id)
            assert user is not None
            token = await _begin_session(request, session, user=user, mfa=True,
                                         method="password+totp")
            device = await remember_device(
                session, user_id=user.id, device=await known_device(
                    session, user_id=user.id, token=_device_token(request)))
    if token is None or user is None:
        await signin_failed(request)
        return _signed_out_page(request, "auth/totp_step.html", lang=lang,
                                next=safe_next(next, ""), error=error, status_code=401)
    response = RedirectResponse(safe_next(next, _home(user.is_admin)), status_code=303)
    response.delete_cookie(CHALLENGE_COOKIE, path="/login")
    set_session_cookie(response, _settings(request), token)
    _keep_device(response, _settings(request), device)
    return response


# --------------------------------------------------------------------------- sign-up

@router.get("/signup", response_class=HTMLResponse)
async def signup_page(request: Request, lang: PageLang) -> Response:
    return _signed_out_page(request, "auth/signup.html", lang=lang, email="", error=None)


@router.post("/signup", response_class=HTMLResponse,
             dependencies=[PreSessionCsrf, PublicCreateLimit])
async def signup_form(request: Request, lang: PageLang,
                      email: Annotated[str, Form(max_length=254)],
                      password: Annotated[str, Form(max_length=1024)],
                      password_again: Annotated[str, Form(max_length=1024)]) -> Response:
    def again(error: str) -> Response:
        return _signed_out_page(request, "auth/signup.html", lang=lang, email=email,
                                error=error, status_code=422)

    if password != password_again:
        return again("The two passwords differ.")
    try:
        async with _sessions(request)() as session, session.begin():
            mail = await signup.sign_up(session, email=email, password=password,
                                        links=links_for(request), policy=policy_of(request))
    except InvalidInput as exc:
        return again(str(exc))
    try:
        await mailer_of(request).send(mail)
    except MailUnavailable:
        return again("We could not send the mail just now. Try again later.")
    return render(request, "auth/check_mail.html", lang=lang, email=email.strip().lower(),
                  reason="signup")


@router.get("/verify", response_class=HTMLResponse)
async def verify_landing(request: Request, lang: PageLang, token: str = "") -> Response:
    return _signed_out_page(request, "auth/verify.html", lang=lang, token=token[:200],
                            done=False, error=None)


@router.post("/verify", response_class=HTMLResponse, dependencies=[PreSessionCsrf])
async def verify_form(request: Request, lang: PageLang,
                      token: Annotated[str, Form(max_length=200)],
                      password: Annotated[str, Form(max_length=1024)] = "") -> Response:
    try:
        async with _sessions(request)() as session, session.begin():
            await signup.verify_email(session, token=token, password=password)
    except InvalidInput as exc:
        if "give the password" in str(exc):  # the link stands: asked again
            return _signed_out_page(request, "auth/verify.html", lang=lang, token=token,
                                    done=False, status_code=422,
                                    error="That is not the password chosen when signing up "
                                          "with this link.")
        return _signed_out_page(request, "auth/verify.html", lang=lang, token="", done=False,
                                error="This link is not valid any more. Sign up again to "
                                      "get a new one.", status_code=422)
    return render(request, "auth/verify.html", lang=lang, token="", done=True, error=None,
                  form_csrf="")


# ------------------------------------------------------------------------ password reset

@router.get("/password-reset", response_class=HTMLResponse)
async def reset_page(request: Request, lang: PageLang) -> Response:
    return _signed_out_page(request, "auth/reset_request.html", lang=lang)


@router.post("/password-reset", response_class=HTMLResponse,
             dependencies=[PreSessionCsrf, PublicCreateLimit])
async def reset_form(request: Request, lang: PageLang, background: BackgroundTasks,
                     email: Annotated[str, Form(max_length=254)]) -> Response:
    # The same answer either way, as soon: nothing here may tell that the address is known
    # (it is looked up, and mailed, once the page is out).
    reset_after_answer(background, request, email)
    return render(request, "auth/check_mail.html", lang=lang, email=email.strip().lower(),
                  reason="reset")


@router.get("/password-reset/confirm", response_class=HTMLResponse)
async def reset_confirm_page(request: Request, lang: PageLang, token: str = "") -> Response:
    return _signed_out_page(request, "auth/reset_confirm.html", lang=lang, token=token[:200],
                            error=None, done=False)


@router.post("/password-reset/confirm", response_class=HTMLResponse,
             dependencies=[PreSessionCsrf])
async def reset_confirm(request: Request, lang: PageLang,
                        token: Annotated[str, Form(max_length=200)],
                        password: Annotated[str, Form(max_length=1024)],
                        password_again: Annotated[str, Form(max_length=1024)]) -> Response:
    def again(error: str) -> Response:
        return _signed_out_page(request, "auth/reset_confirm.html", lang=lang, token=token,
                                error=error, done=False, status_code=422)

    if password != password_again:
        return again("The two passwords differ.")
    refused = None
    try:
        async with _sessions(request)() as session, session.begin():
            try:
                await signup.confirm_password_reset(session, token=token, password=password,
                                                    ip=client_ip(request),
                                                    policy=policy_of(request))
            except SameAsPaymentPassword as exc:
                refused = exc  # the count, and the spent link, commit
    except InvalidInput as exc:
        return again(str(exc))
    if refused is not None:
        await signin_failed(request)
        return again(f"{refused} Ask for a new link.")
    return render(request, "auth/reset_confirm.html", lang=lang, token="", error=None,
                  done=True, form_csrf="")


# ------------------------------------------------------------------------ TOTP enrollment

def _ask_password(view: SessionView) -> bool:
    """Whether turning TOTP on asks for the sign-in password: the sign-in is not fresh."""
    return utcnow() - view.created_at >= stepup.FRESH_SIGN_IN


@router.get(ENROLL_PATH, response_class=HTMLResponse)
async def enroll_page(request: Request, view: PageUser, lang: PageLang) -> Response:
    async with _sessions(request)() as session, session.begin():
        creds = await session.get(Credentials, view.user_id)
        required = await totp.must_enroll(session, user_id=view.user_id)
    return render(request, "auth/totp_enroll.html", lang=lang, view=view,
                  enabled=totp.totp_enabled(creds), required=required, enrollment=None,
                  error=None, ask_password=_ask_password(view))


@router.post(ENROLL_PATH, response_class=HTMLResponse, dependencies=[CsrfProtected])
async def enroll_start(request: Request, view: PageUser, lang: PageLang,
                       password: Annotated[str, Form(max_length=1024)] = "") -> Response:
    """Start enrolling: a sign-in within ``FRESH_SIGN_IN``, or the sign-in password now
    (:func:`satvault.auth.stepup.begin_totp_enrollment`)."""
    error, status = "", 403
    async with _sessions(request)() as session, session.begin():
        try:
            enrollment = await stepup.begin_totp_enrollment(
                session, user_id=view.user_id, signed_in_at=view.created_at,
                password=password or None, ip=client_ip(request), policy=policy_of(request))
        except AccountLocked:
            error, status = "Too many failed attempts. Try again later.", 429
        except Unauthenticated:  # counted: the transaction commits
            error = "The sign-in password is not right."
            await signin_failed(request)
        except StepUpNeeded:
            error = "Give your sign-in password to turn on two-factor sign-in."
        except InvalidInput as exc:  # on already
            error, status = str(exc), 422
    if error:
        return render(request, "auth/totp_enroll.html", lang=lang, view=view, enabled=False,
                      required=False, enrollment=None, error=error, status_code=status,
                      ask_password=_ask_password(view))
    return render(request, "auth/totp_enroll.html", lang=lang, view=view, enabled=False,
                  required=False, enrollment=enrollment, error=None, ask_password=False)


@router.post("/account/totp/confirm", response_class=HTMLResponse,
             dependencies=[CsrfProtected])
async def enroll_confirm(request: Request, view: PageUser, lang: PageLang,
                         code: Annotated[str, Form(max_length=20)]) -> Response:
    error, status = "", 422
    async with _sessions(request)() as session, session.begin():
        try:
            codes = await totp.confirm_enrollment(session, user_id=view.user_id, code=code,
                                                  policy=policy_of(request),
                                                  ip=client_ip(request),
                                                  keep_session_id=view.id)
            await mark_mfa(session, session_id=view.id)
        except AccountLocked:
            error, status = "Too many failed attempts. Try again later.", 429
        except (Unauthenticated, InvalidInput) as exc:  # a wrong code: counted, and commits
            if isinstance(exc, InvalidCode):
                await signin_failed(request)
            error = "That code is not right. Start again and scan the new code."
    if error:
        return render(request, "auth/totp_enroll.html", lang=lang, view=view, enabled=False,
                      required=False, enrollment=None, status_code=status, error=error,
                      ask_password=_ask_password(view))
    return render(request, "auth/recovery_codes.html", lang=lang, view=view, codes=codes)


# ---------------------------------------------------------------------- the security page

async def _security(request: Request, view: PageUser, lang: Language, *,
                    message: str | None = None, error: str | None = None,
                    status_code: int = 200) -> HTMLResponse:
    async with _sessions(request)() as session, session.begin():
        rows = await list_sessions(session, user_id=view.user_id)
        creds = await session.get(Credentials, view.user_id)
    return render(request, "auth/security.html", lang=lang, view=view, sessions=rows,
                  totp_enabled=totp.totp_enabled(creds),
                  has_payment_password=creds is not None
                  and creds.payment_password_hash is not None,
                  message=message, error=error, status_code=status_code)


@router.get("/account/security", response_class=HTMLResponse)
async def security_page(request: Request, view: PageUser, lang: PageLang) -> Response:
    return await _security(request, view, lang)


@router.post("/account/sessions/{session_id}/revoke", dependencies=[CsrfProtected])
async def revoke_one(request: Request, view: PageUser, session_id: str) -> Response:
    async with _sessions(request)() as session, session.begin():
        await revoke_session(session, user_id=view.user_id, session_id=session_id,
                             actor=view.user_id, reason="revoked on the security page")
    return RedirectResponse("/account/security" if session_id != view.id else "/login",
                            status_code=303)


@router.post("/account/sessions/revoke-all", dependencies=[CsrfProtected])
async def revoke_all(request: Request, view: PageUser) -> Response:
    """Sign out everywhere else (every other session and every API token family)."""
    async with _sessions(request)() as session, session.begin():
        await revoke_everything(session, user_id=view.user_id, actor=view.user_id,
                                reason="signed out everywhere", except_session_id=view.id)
    return RedirectResponse("/account/security", status_code=303)


@router.post("/account/password", response_class=HTMLResponse, dependencies=[CsrfProtected])
async def change_password(request: Request, view: PageUser, lang: PageLang,
                          current: Annotated[str, Form(max_length=1024)],
                          password: Annotated[str, Form(max_length=1024)],
                          password_again: Annotated[str, Form(max_length=1024)]) -> Response:
    if password != password_again:
        return await _security(request, view, lang, error="The two passwords differ.",
                               status_code=422)
    if len(password) < 8:
        return await _security(request, view, lang, status_code=422,
                               error="A password needs at least 8 characters.")
    async with _sessions(request)() as session, session.begin():
        user = await session.get(User, view.user_id, with_for_update=True)
        assert user is not None
        creds = await credentials(session, user.id, for_update=True)
        error = None
        if is_locked(creds, utcnow()):  # while locked nothing is checked
            error = "Too many failed attempts. Try again later."
        elif not user.password_hash \
                or not await verify_password_async(current, user.password_hash):
            await signin.count_failure(session, creds, policy=policy_of(request),
                                       what="password-change", ip=client_ip(request))
            await signin_failed(request)
            error = "The current password is not right."
        else:
            # Anyone else signed in with the old password is out now, and reset links
            # mailed before are spent. Equal to the payment password: refused, and counted
            # as a guess at it (the refusal says what it is).
            try:
                await set_password(session, user=user, password=password,
                                   reason="password changed", ip=client_ip(request),
                                   policy=policy_of(request), except_session_id=view.id)
            except SameAsPaymentPassword as exc:
                await signin_failed(request)
                error = str(exc)
            else:
                await record(session, actor=user.id, action="auth.password_changed",
                             object=user.id)
    if error is not None:
        return await _security(request, view, lang, status_code=422, error=error)
    return await _security(request, view, lang, message="Password changed. Every other "
                                                        "session was signed out.")


@router.post("/account/payment-password", response_class=HTMLResponse,
             dependencies=[CsrfProtected])
async def payment_password(request: Request, view: PageUser, lang: PageLang,
                           current: Annotated[str, Form(max_length=1024)],
                           payment_password: Annotated[str, Form(max_length=1024)],
                           payment_password_again: Annotated[str, Form(max_length=1024)]
                           ) -> Response:
    if payment_password != payment_password_again:
        return await _security(request, view, lang, error="The two passwords differ.",
                               status_code=422)
    error: str | None = None
    async with _sessions(request)() as session, session.begin():
        try:
            await stepup.set_payment_password(
                session, user_id=view.user_id, password=current,
                payment_password=payment_password, stepped_up=stepup.is_stepped_up(view),
                ip=client_ip(request), policy=policy_of(request))
        except AccountLocked:  # before the wrong password's count, which commits
            error = "Too many failed attempts. Try again later."
        except Unauthenticated:
            error = "The sign-in password is not right."
            await signin_failed(request)
        except InvalidInput as exc:
            error = str(exc)
        except StepUpNeeded:
            raise StepUpRequired("/account/security") from None
    if error is not None:
        return await _security(request, view, lang, error=error, status_code=422)
    return await _security(request, view, lang, message="Payment password set.")


@router.post("/account/totp/disable", response_class=HTMLResponse,
             dependencies=[CsrfProtected])
async def totp_disable(request: Request, view: PageUser, lang: PageLang,
                       code: Annotated[str, Form(max_length=20)]) -> Response:
    error, status = None, 422
    async with _sessions(request)() as session, session.begin():
        try:
            await totp.disable(session, user_id=view.user_id, code=code, actor=view.user_id,
                               policy=policy_of(request), ip=client_ip(request))
        except Forbidden as exc:  # required of this user (an admin, or marked by one)
            error, status = f"Two-factor sign-in stays on: {exc}.", 403
        except InvalidCode:
            # A guess like any other: counted towards the lockout (it commits).
            await signin_failed(request)
            error = "That code is not right."
        except AccountLocked:
            error = "Too many failed attempts. Try again later."
        except InvalidInput:
            error = "That code is not right."
    if error is not None:
        return await _security(request, view, lang, status_code=status, error=error)
    return await _security(request, view, lang, message="Two-factor sign-in is off.")


# ------------------------------------------------------------------------------ step-up

@router.get("/account/step-up", response_class=HTMLResponse)
async def step_up_page(request: Request, view: PageUser, lang: PageLang,
                       next: str = "") -> Response:
    async with _sessions(request)() as session, session.begin():
        creds = await session.get(Credentials, view.user_id)
    return render(request, "auth/step_up.html", lang=lang, view=view, next=safe_next(next),
                  totp_enabled=totp.totp_enabled(creds),
                  has_payment_password=creds is not None
                  and creds.payment_password_hash is not None, error=None)


@router.post("/account/step-up", response_class=HTMLResponse, dependencies=[CsrfProtected])
async def step_up_form(request: Request, view: PageUser, lang: PageLang,
                       code: Annotated[str, Form(max_length=20)] = "",
                       payment_password: Annotated[str, Form(max_length=1024)] = "",
                       next: Annotated[str, Form(max_length=500)] = "") -> Response:
    error = None
    async with _sessions(request)() as session, session.begin():
        try:
            await stepup.step_up(session, session_id=view.id, totp_code=code or None,
                                 payment_password=payment_password or None,
                                 ip=client_ip(request), policy=policy_of(request))
        except AccountLocked:
            error = "Too many failed attempts. Try again later."
        except Unauthenticated:  # a wrong code or payment password: counted (it commits)
            await signin_failed(request)
            error = "That is not right."
        except (InvalidInput, NotFound):
            error = "That is not right."
        creds = await session.get(Credentials, view.user_id)
    if error is None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "auth/step_up.html", lang=lang, view=view, next=safe_next(next),
                  totp_enabled=totp.totp_enabled(creds),
                  has_payment_password=creds is not None
                  and creds.payment_password_hash is not None, error=error, status_code=401)
