"""The pages people use: sign-in, the merchant dashboard and the operator's admin console.

Server-rendered (Jinja2, :mod:`.render`) on the same app and the same services as the API;
htmx, served by satvault itself, only enhances forms and fragments, and every page works
without it. Sign-in state is a server-side session (:mod:`satvault.auth.sessions`) in an
HTTP-only cookie; every state-changing form carries the session's CSRF token
(:mod:`.deps`). :data:`PAGE_ROUTERS` is what the app factory includes.
"""

from fastapi import APIRouter

from satvault.web.pages import assets, home, signin
from satvault.web.pages.merchant import money, overview, statement

__all__ = ["PAGE_ROUTERS"]

PAGE_ROUTERS: tuple[APIRouter, ...] = (
    assets.router,
    signin.router,
    home.router,
    overview.router,
    statement.router,
    money.router,
)
