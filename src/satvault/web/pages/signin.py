"""Signing in and out with a password, the language choice, and the error page every page
route falls back to. (Sign-up, e-mail verification, password reset and the second factor are
in :mod:`satvault.web.pages.auth_pages`.)"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import User
from satvault.auth.sessions import revoke_session
from satvault.checkout.i18n import LANGUAGES
from satvault.config import Settings
from satvault.kernel.errors import InvalidInput
from satvault.web.pages.auth_pages import SignInBudget, password_sign_in
from satvault.web.pages.deps import (
    ENROLL_PATH,
    CsrfProtected,
    CsrfRefused,
    EnrollmentRequired,
    OptionalPageUser,
    PageLang,
    PageUser,
    PreSessionCsrf,
    SignInRequired,
    StepUpRequired,
    clear_session_cookie,
    mark_page,
    new_pre_session_csrf,
    page_language,
    safe_next,
    set_pre_session_csrf,
    sign_in_redirect,
)
from satvault.web.pages.render import render

__all__ = ["error_page", "install_page_redirects", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_page)])


def login_form(request: Request, *, lang: PageLang, settings: Settings, next_path: str,
               email: str = "", error: str | None = None, status_code: int = 200
               ) -> HTMLResponse:
    token = new_pre_session_csrf(request)
    response = render(request, "login.html", lang=lang, form_csrf=token, next=next_path,
                      email=email, error=error, status_code=status_code)
    set_pre_session_csrf(response, settings, token)
    return response


def _home(is_admin: bool) -> str:
    return "/admin" if is_admin else "/dashboard"


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, lang: PageLang, view: OptionalPageUser,
                     next: str | None = None) -> Response:
    if view is not None:
        return RedirectResponse(safe_next(next, _home(view.is_admin)), status_code=303)
    return login_form(request, lang=lang, settings=request.app.state.settings,
                      next_path=safe_next(next))


@router.post("/login", response_class=HTMLResponse, dependencies=[PreSessionCsrf, SignInBudget])
async def login(request: Request, lang: PageLang,
                email: Annotated[str, Form(max_length=254)],
                password: Annotated[str, Form(max_length=1024)],
                next: Annotated[str, Form(max_length=500)] = "") -> Response:
    """The password step (satvault.web.pages.auth_pages): lockout, audit, then a session, or
    the TOTP step for an account with TOTP (no session before it)."""
    outcome = await password_sign_in(request, lang=lang, email=email, password=password,
                                     next_path=next)
    if isinstance(outcome, str):
        return login_form(request, lang=lang, settings=request.app.state.settings,
                          next_path=safe_next(next), email=email, error=outcome,
                          status_code=401)
    return outcome


@router.post("/logout", dependencies=[CsrfProtected])
async def logout(request: Request, view: PageUser) -> Response:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session, session.begin():
        await revoke_session(session, user_id=view.user_id, session_id=view.id,
                             actor=view.user_id, reason="signed out")
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response, request.app.state.settings)
    return response


@router.post("/account/language", dependencies=[CsrfProtected])
async def choose_language(request: Request, view: PageUser,
                          language: Annotated[str, Form(max_length=8)],
                          next: Annotated[str, Form(max_length=500)] = "") -> Response:
    """The user's language for every page, kept on the user (any device, any session)."""
    if language not in LANGUAGES:
        raise InvalidInput(f"no language {language!r}")
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == view.user_id)
                              .values(locale=language))
    return RedirectResponse(safe_next(next, "/dashboard"), status_code=303)


def error_page(request: Request, status: int, detail: str) -> Response:
    """Any error on a page route, as a page in the reader's language."""
    view = getattr(request.state, "page_view", None)
    return render(request, "error.html", lang=page_language(request, view), view=view,
                  status=status, detail=detail, status_code=status)


def install_page_redirects(app: FastAPI) -> None:
    """A page reached without a session goes to sign-in and comes back; a form posted
    without its CSRF token is refused with a page saying so, and nothing changed."""

    @app.exception_handler(SignInRequired)
    async def _sign_in(_request: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(exc.next_path)

    @app.exception_handler(EnrollmentRequired)
    async def _enroll(_request: Request, _exc: EnrollmentRequired) -> Response:
        return RedirectResponse(ENROLL_PATH, status_code=303)

    @app.exception_handler(StepUpRequired)
    async def _step_up(_request: Request, exc: StepUpRequired) -> Response:
        return RedirectResponse(f"/account/step-up?next={quote(exc.next_path, safe='/')}",
                                status_code=303)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _exc: CsrfRefused) -> Response:
        request.state.page = True
        return error_page(request, 403, "This form expired or did not come from this site. "
                                        "Reload the page and try again.")
