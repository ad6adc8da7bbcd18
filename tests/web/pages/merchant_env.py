"""The merchant money pages' test world over the simnet environment (``lnenv``): two
merchant owners, Carol (with a store and a merchant API key) and Dave, and the app served on
a real port with a browser-like client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest

from satvault.accounts import service as acc
from tests.chainenv import LnEnv
from tests.checkout.conftest import make_app
from tests.liveserver import serve
from tests.web.pages.conftest import PASSWORD

__all__ = ["Shops", "shops_fixture", "site"]


@dataclass
class Shops:
    carol: str
    dave: str
    carol_merchant: str
    dave_merchant: str
    carol_wallet: str
    store: str
    key: dict[str, str]


@pytest.fixture(name="shops")
async def shops_fixture(lnenv: LnEnv) -> Shops:
    async with lnenv.sessions() as s, s.begin():
        carol = await acc.create_user(s, email="carol@example.com", password=PASSWORD)
        dave = await acc.create_user(s, email="dave@example.com", password=PASSWORD)
        mc = await acc.create_merchant(s, name="Carol's Café", owner_user_id=carol.id)
        md = await acc.create_merchant(s, name="Dave's Deli", owner_user_id=dave.id)
        wallet = await acc.ensure_wallet(s, owner_type="merchant", owner_id=mc.id)
        store = await acc.create_store(s, merchant_id=mc.id, name="Café", speed_policy=1)
        _, key = await acc.create_api_key(s, owner_id=mc.id, scopes=[
            "wallet:read", "invoices:write", "invoices:read"])
    return Shops(carol.id, dave.id, mc.id, md.id, wallet.id, store.id,
                 {"Authorization": f"Bearer {key}"})


@asynccontextmanager
async def site(env: LnEnv) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a real port (event streams need one), and a browser-like client."""
    app = make_app(env)
    async with app.router.lifespan_context(app), serve(app) as base, \
            httpx.AsyncClient(base_url=base, timeout=20) as client:
        yield client


