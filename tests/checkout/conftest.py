"""Fixtures for the checkout tests: a store with an invoices key on the simnet + Lightning
environment, the real app over it, and the step that moves payments onto invoices."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from satvault.accounts import service as acc
from satvault.invoices.tasks import refresh_open_invoices
from satvault.lightning.invoices import InvoiceListener
from satvault.web.app import create_app
from tests.chainenv import LnEnv


@dataclass
class Shop:
    store: str
    key: dict[str, str]


@pytest.fixture
async def shop(lnenv: LnEnv) -> Shop:
    async with lnenv.sessions() as s, s.begin():
        merchant = await acc.create_merchant(s, name="Satoshi Coffee Co.")
        store = await acc.create_store(s, merchant_id=merchant.id, name="Satoshi Coffee",
                                       speed_policy=1)
        _, key = await acc.create_api_key(s, owner_id=store.id,
                                          scopes=["invoices:write", "invoices:read"])
    return Shop(store.id, {"Authorization": f"Bearer {key}"})


def make_app(env: LnEnv, *, start_workers: bool = False) -> FastAPI:
    """The app as ``satvault serve`` builds it, over this environment's runtime."""
    return create_app(env.settings, engine=env.sessions.kw["bind"],
                      start_workers=start_workers, runtime=env.runtime)


@asynccontextmanager
async def client(env: LnEnv) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(env)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def new_invoice(c: httpx.AsyncClient, shop: Shop, **body: Any) -> dict[str, Any]:
    r = await c.post(f"/api/v1/stores/{shop.store}/invoices", json=body,
                     headers={**shop.key, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    invoice: dict[str, Any] = r.json()
    return invoice


async def settle_all(env: LnEnv) -> None:
    """What the workers do in a running app: see the chain, the Lightning node, the invoices."""
    await env.runtime.watcher.step()
    await InvoiceListener(env.sessions, env.runtime.lightning, node="lnd",
                          invoice_fee_bp=env.settings.invoice_fee_bp).sweep()
    await refresh_open_invoices(env.sessions, env.settings, env.runtime.lightning)
