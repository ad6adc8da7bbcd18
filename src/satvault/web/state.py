"""What the app factory put on ``app.state``, read in one place by the routes, which hand the
plain values (sessions, settings, a backend) to the services."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.lightning import LightningBackend
from satvault.config import Settings
from satvault.lightning.invoices import StoreInvoiceHook
from satvault.logs import get_logger
from satvault.withdrawals.refused import InvoiceFollowUp

__all__ = ["follow_up_invoice", "invoice_follow_up_of", "lightning_of", "lnurl_http_of",
           "payer_wake_of", "runtime_of", "sessions_of", "settings_of"]


_log = get_logger(__name__)


def sessions_of(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def runtime_of(request: Request) -> Any:
    """The runtime (node connections, rates), or None when the app runs without one."""
    return getattr(request.app.state, "runtime", None)


def lightning_of(request: Request) -> LightningBackend | None:
    backend: LightningBackend | None = getattr(runtime_of(request), "lightning", None)
    return backend


def payer_wake_of(request: Request) -> asyncio.Event | None:
    """The event that wakes the Lightning payer, when this process runs one."""
    wake: asyncio.Event | None = getattr(runtime_of(request), "payer_wake", None)
    return wake


def store_invoice_hook_of(request: Request) -> StoreInvoiceHook | None:
    """The hook that settles a store invoice in the transaction crediting its payment."""
    hook: StoreInvoiceHook | None = getattr(runtime_of(request), "on_store_invoice", None)
    return hook


def invoice_follow_up_of(request: Request) -> InvoiceFollowUp | None:
    """What issues a store invoice a fresh BOLT11 once one of its BOLT11s was cancelled."""
    follow_up: InvoiceFollowUp | None = getattr(runtime_of(request), "invoice_follow_up",
                                                None)
    return follow_up


async def follow_up_invoice(request: Request, invoice_id: str) -> None:
    """After a change to a store invoice committed: what the node must do for it (cancel the
    BOLT11s nobody may pay any more, issue one for what is still due). Never raises: the
    change stands, and the on-chain address or a later follow-up still covers the rest."""
    follow_up = invoice_follow_up_of(request)
    if follow_up is None:
        return
    try:
        await follow_up(invoice_id)
    except Exception:
        _log.exception("store_invoice_follow_up_failed", invoice=invoice_id)


def lnurl_http_of(request: Request) -> httpx.AsyncClient | None:
    """An HTTP client for LNURL resolution put there by tests or proxies; None: a fresh one."""
    http: httpx.AsyncClient | None = getattr(request.app.state, "lnurl_http", None)
    return http
