"""The HTTP routes, one module per area. :data:`ROUTERS` is what the app factory includes, in
this order (the order routes are matched and listed in the OpenAPI document).

Routes parse the request, call a domain service with plain values (a session or the session
factory, the settings, a backend) and shape the answer; the work is the services'.
"""

from fastapi import APIRouter

from satvault.web.routes import (
    admin,
    approvals,
    audit,
    auth,
    checkout,
    custody_moves,
    deposits,
    invoices,
    kyc,
    liabilities,
    lnurl,
    metrics,
    payout_batches,
    reports,
    review,
    risk,
    risk_cases,
    stores,
    streams,
    wallets,
    webhooks,
    withdrawals,
)

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    wallets.router,
    stores.router,
    admin.router,
    admin.reconciliation_router,
    review.router,
    payout_batches.router,
    custody_moves.router,
    admin.doctor_router,
    audit.router,
    deposits.router,
    admin.chain_router,
    withdrawals.router,
    lnurl.router,
    invoices.router,
    webhooks.router,
    streams.router,
    checkout.router,
    liabilities.router,
    reports.router,
    kyc.router,
    kyc.owner_router,
    approvals.router,
    risk.router,
    metrics.router,
    risk_cases.router,
    auth.router,
)
