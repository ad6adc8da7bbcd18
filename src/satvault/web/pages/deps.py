"""What a page handler needs: the signed-in session (or a redirect to sign in), the admin
check, CSRF protection, the page's language, and the API principal a page acts as.

- The session cookie is HTTP-only, ``SameSite=Lax``, and ``Secure`` outside development
  (then named ``__Host-sv_session``: the browser refuses it over plain HTTP, from a
  subdomain, or with a ``Domain``). Reading it is its own short unit of work, like the API's
  key check, so a handler that manages its own transactions finds the database free.
- CSRF: every state-changing form carries the session's token (``csrf_token``, or the
  ``X-CSRF-Token`` header that htmx sends from the page's ``<meta>``). Signed-out forms (sign
  in, sign up, reset) use a double-submit cookie, ``sv_csrf``, since there is no session yet.
- A page acts through the same services as the API, as a :class:`Principal`: an admin's
  (scope ``admin``, only once the second factor passed in this session) or a merchant's
  (every merchant scope, only for a merchant the user owns).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import Merchant
from satvault.accounts.service import SCOPES, Principal
from satvault.auth.sessions import SessionView, csrf_matches, resolve_session, revoke_session
from satvault.auth.stepup import require_stepped_up
from satvault.auth.totp import second_factor_due
from satvault.checkout.i18n import LANGUAGES, Language, choose_language
from satvault.config import Settings
from satvault.kernel.errors import Forbidden, NotFound
from satvault.kernel.errors import StepUpRequired as StepUpNeeded

__all__ = [
    "CSRF_COOKIE",
    "ENROLLMENT_PATHS",
    "ENROLL_PATH",
    "MERCHANT_SCOPES",
    "AdminSteppedUp",
    "CsrfProtected",
    "CsrfRefused",
    "EnrollmentRequired",
    "KeepBody",
    "OptionalPageUser",
    "PageAdmin",
    "PageCreateLimit",
    "PageLang",
    "PageUser",
    "PreSessionCsrf",
    "SignInRequired",
    "StepUpRequired",
    "SteppedUp",
    "admin_principal",
    "clear_session_cookie",
    "cookie_name",
    "cookie_secure",
    "csrf_protected",
    "mark_page",
    "merchant_principal",
    "new_pre_session_csrf",
    "page_language",
    "safe_next",
    "set_pre_session_csrf",
    "set_session_cookie",
    "sign_in_redirect",
]

CSRF_COOKIE = "sv_csrf"
MERCHANT_SCOPES = frozenset(SCOPES - {"admin"})


class SignInRequired(Exception):
    """No live session: the page answers with a redirect to ``/login?next=…``."""

    def __init__(self, next_path: str = "/dashboard") -> None:
        super().__init__(next_path)
        self.next_path = next_path


class StepUpRequired(Exception):
    """A money action (withdrawal, API key, payout destination) without a factor re-proved in
    the last few minutes: the page sends the user to ``/account/step-up?next=…`` first."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class EnrollmentRequired(Exception):
    """An admin (or a user an admin marked) without TOTP: every page but enrollment and
    sign-out sends them to ``/account/totp/enroll`` first."""


ENROLL_PATH = "/account/totp/enroll"
ENROLLMENT_PATHS = frozenset({ENROLL_PATH, "/account/totp/confirm", "/logout"})


class CsrfRefused(Exception):
    """A state-changing request without the right CSRF token: refused, nothing changed."""


def cookie_secure(settings: Settings) -> bool:
    if settings.session_cookie_secure is not None:
        return settings.session_cookie_secure
    return settings.environment == "production"


def cookie_name(settings: Settings) -> str:
    return "__Host-sv_session" if cookie_secure(settings) else "sv_session"


def set_session_cookie(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(cookie_name(settings), token, httponly=True, samesite="lax",
                        secure=cookie_secure(settings), path="/")


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(cookie_name(settings), path="/", httponly=True, samesite="lax",
                           secure=cookie_secure(settings))


def safe_next(value: str | None, default: str = "/dashboard") -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if (not value or not value.startswith("/") or value.startswith("//")
            or "\\" in value or any(ord(c) < 0x20 for c in value) or len(value) > 500):
        return default
    return value


async def _view(request: Request) -> SessionView | None:
    if hasattr(request.state, "page_view"):
        cached: SessionView | None = request.state.page_view
        return cached
    settings: Settings = request.app.state.settings
    token = request.cookies.get(cookie_name(settings))
    view = None
    if token:
        sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
        async with sessions() as session, session.begin():
            view = await resolve_session(session, token)
    request.state.page_view = view
    return view


def page_language(request: Request, view: SessionView | None) -> Language:
    """``?lang=``, then the user's chosen language, then the browser's, then English."""
    query = request.query_params.get("lang")
    if not query and view is not None and view.locale in LANGUAGES:
        return LANGUAGES[view.locale]
    return choose_language(query=query, invoice_lang=None,
                           accept_language=request.headers.get("accept-language"))


async def _user(request: Request) -> SessionView:
    view = await _view(request)
    if view is None:
        raise SignInRequired(_back_here(request))
    if not view.mfa_verified:
        due = await _second_factor_due(request, view)
        if due == "verify":
            # Signed in with the password alone before TOTP was turned on: ended, and
            # signed in again with the code.
            sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
            async with sessions() as session, session.begin():
                await revoke_session(session, user_id=view.user_id, session_id=view.id,
                                     actor="system", reason="began without the second "
                                     "factor the account has now")
            raise SignInRequired(_back_here(request))
        if due == "enroll" and request.url.path not in ENROLLMENT_PATHS:
            raise EnrollmentRequired()
    return view


def _back_here(request: Request) -> str:
    """Where to come back to after signing in: this page, query and all."""
    return safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


async def _second_factor_due(request: Request, view: SessionView) -> str | None:
    """For a session that has not passed a second factor: what it owes first
    (:func:`~satvault.auth.totp.second_factor_due`), read once per request."""
    if not hasattr(request.state, "second_factor_due"):
        sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
        async with sessions() as session, session.begin():
            request.state.second_factor_due = await second_factor_due(
                session, user_id=view.user_id)
    due: str | None = request.state.second_factor_due
    return due


async def _admin(request: Request) -> SessionView:
    view = await _user(request)
    if not view.is_admin:
        raise Forbidden("this page is for operators")
    if not view.mfa_verified:
        # An admin's session is usable for admin pages only once the second factor passed.
        raise Forbidden("operators sign in with their second factor (TOTP) first")
    return view


async def _stepped_up(request: Request) -> SessionView:
    view = await _user(request)
    _require_step_up(request, view)
    return view


async def _admin_stepped_up(request: Request) -> SessionView:
    view = await _admin(request)
    _require_step_up(request, view)
    return view


def _require_step_up(request: Request, view: SessionView) -> None:
    try:
        require_stepped_up(view)
    except StepUpNeeded:
        back = request.url.path
        if request.method != "GET":  # the form's page, to submit again after the step-up
            referer = urlsplit(request.headers.get("referer", ""))
            back = referer.path if referer.path else back
        raise StepUpRequired(safe_next(back)) from None


async def _lang(request: Request) -> Language:
    return page_language(request, await _view(request))


OptionalPageUser = Annotated[SessionView | None, Depends(_view)]
PageUser = Annotated[SessionView, Depends(_user)]
PageAdmin = Annotated[SessionView, Depends(_admin)]
# For money actions from the pages: the user re-proved a factor (TOTP or the payment
# password) within satvault.auth.sessions.STEP_UP_WINDOW. Use it instead of PageUser.
SteppedUp = Annotated[SessionView, Depends(_stepped_up)]
# The same for an operator's money actions (a payout destination's change): PageAdmin, and
# a factor re-proved within the window.
AdminSteppedUp = Annotated[SessionView, Depends(_admin_stepped_up)]
PageLang = Annotated[Language, Depends(_lang)]


async def csrf_protected(request: Request) -> None:
    """A dependency for every state-changing page route of a signed-in user."""
    view = await _view(request)
    token = request.headers.get("x-csrf-token")
    if token is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf_token")
        token = value if isinstance(value, str) else None
    if view is None:
        raise SignInRequired()
    if not csrf_matches(view, token):
        raise CsrfRefused()


async def _pre_session_csrf(request: Request) -> None:
    """Double-submit check for the signed-out forms: the form's token equals the cookie's."""
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    form = await request.form()
    value = form.get("csrf_token")
    if not cookie or not isinstance(value, str) or not hmac.compare_digest(
            cookie.encode(), value.encode()):
        raise CsrfRefused()


PreSessionCsrf = Depends(_pre_session_csrf)


def new_pre_session_csrf(request: Request) -> str:
    """The signed-out CSRF token: the cookie's if the browser has one, else a new one (the
    caller sets it with :func:`set_pre_session_csrf`)."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def set_pre_session_csrf(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=cookie_secure(settings), path="/")


async def merchant_principal(session: AsyncSession, view: SessionView,
                             merchant_id: str) -> Principal:
    """The principal a merchant's pages act as: only for a merchant this user owns (another
    merchant's id is simply not found)."""
    owner = (await session.execute(select(Merchant.owner_user_id)
                                   .where(Merchant.id == merchant_id))).scalar_one_or_none()
    if owner is None or owner != view.user_id:
        raise NotFound(f"merchant {merchant_id!r} not found")
    return Principal(key_id=view.id, owner_type="merchant", owner_id=merchant_id,
                     scopes=MERCHANT_SCOPES, merchant_id=merchant_id)


def admin_principal(view: SessionView) -> Principal:
    if not (view.is_admin and view.mfa_verified):
        raise Forbidden("this page is for operators")
    return Principal(key_id=view.id, owner_type="user", owner_id=view.user_id,
                     scopes=frozenset({"admin"}))


def sign_in_redirect(next_path: str) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(next_path, safe='/')}", status_code=303)


async def mark_page(request: Request) -> None:
    """A router dependency of every page router: errors on these routes render as pages."""
    request.state.page = True


CsrfProtected = Depends(csrf_protected)


async def _page_create_limit(request: Request) -> None:
    """The API's creation budget for a form that makes what the API's counted endpoints make
    (a withdrawal, a voucher, a deposit, a refund, a store invoice …), counted per web session
    as the API counts per key, in the same storage (so, with Redis, across processes).
    Spent after the CSRF check, before the form is read."""
    limiter = getattr(request.app.state, "rate_limiter", None)
    view = await _view(request)
    if limiter is not None and view is not None:
        await limiter.spend("create", view.id)


# After CsrfProtected in a route's ``dependencies``.
PageCreateLimit = Depends(_page_create_limit)


async def _keep_body(request: Request) -> None:
    """Read the raw form before anything parses it: the idempotency check hashes the request
    body, as the API's does, so a double submit of the same form is recognised."""
    await request.body()


# Before CsrfProtected in a route's dependencies (it parses the form).
KeepBody = Depends(_keep_body)
