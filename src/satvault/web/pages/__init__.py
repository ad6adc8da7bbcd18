"""The pages people use: sign-in, the merchant dashboard and the operator's admin console.

Server-rendered (Jinja2, :mod:`.render`) on the same app and the same services as the API;
htmx, served by satvault itself, only enhances forms and fragments, and every page works
without it. Sign-in state is a server-side session (:mod:`satvault.auth.sessions`) in an
HTTP-only cookie; every state-changing form carries the session's CSRF token
(:mod:`.deps`). :data:`PAGE_ROUTERS` is what the app factory includes.
"""

from fastapi import APIRouter

from satvault.web.pages import assets, auth_pages, home, signin
from satvault.web.pages.admin import accounts as admin_accounts
from satvault.web.pages.admin import audit as admin_audit
from satvault.web.pages.admin import cases as admin_cases
from satvault.web.pages.admin import custody as admin_custody
from satvault.web.pages.admin import home as admin_home
from satvault.web.pages.admin import kyc as admin_kyc
from satvault.web.pages.admin import reports as admin_reports
from satvault.web.pages.admin import review as admin_review
from satvault.web.pages.admin import rules as admin_rules
from satvault.web.pages.merchant import invoices as merchant_invoices
from satvault.web.pages.merchant import keys as merchant_keys
from satvault.web.pages.merchant import lightning as merchant_lightning
from satvault.web.pages.merchant import money as merchant_money
from satvault.web.pages.merchant import overview as merchant_overview
from satvault.web.pages.merchant import statement as merchant_statement
from satvault.web.pages.merchant import stores as merchant_stores
from satvault.web.pages.merchant import verification as merchant_verification
from satvault.web.pages.merchant import webhooks as merchant_webhooks

__all__ = ["PAGE_ROUTERS"]

PAGE_ROUTERS: tuple[APIRouter, ...] = (
    assets.router,
    signin.router,
    auth_pages.router,
    home.router,
    merchant_overview.router,
    merchant_statement.router,
    merchant_money.router,
    merchant_stores.router,
    merchant_invoices.router,
    merchant_keys.router,
    merchant_webhooks.router,
    merchant_lightning.router,
    merchant_verification.router,
    admin_custody.router,
    admin_rules.router,
    admin_home.router,
    admin_accounts.router,
    admin_kyc.router,
    admin_cases.router,
    admin_audit.router,
    admin_reports.router,
    admin_review.router,
)
