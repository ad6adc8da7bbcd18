"""Fixtures for the pages: the real app over the test database, a browser-like client (it
keeps cookies), and helpers that read a page's CSRF token and sign in through the form."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.config import Settings
from satvault.ledger.platform import ensure_platform_accounts
from satvault.web.app import create_app

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page embeds in its forms."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD,
                  next_path: str = "") -> httpx.Response:
    """Signs in through the login form as a browser would: GET (cookie + token), POST."""
    page = await client.get("/login")
    assert page.status_code == 200, page.text
    return await client.post("/login", data={"email": email, "password": password,
                                             "csrf_token": csrf_of(page.text),
                                             "next": next_path})


@dataclass
class People:
    alice: str  # a merchant owner
    bob: str  # another merchant owner
    root: str  # an operator
    alice_merchant: str
    bob_merchant: str


@pytest.fixture
async def people(sessions: async_sessionmaker[AsyncSession]) -> People:
    async with sessions() as s, s.begin():
        await ensure_platform_accounts(s, "BTC")
        alice = await acc.create_user(s, email="alice@example.com", password=PASSWORD)
        bob = await acc.create_user(s, email="bob@example.com", password=PASSWORD)
        root = await acc.create_user(s, email="root@example.com", password=PASSWORD,
                                     is_admin=True)
        ma = await acc.create_merchant(s, name="Alice's Shop", owner_user_id=alice.id)
        mb = await acc.create_merchant(s, name="Bob's Bikes", owner_user_id=bob.id)
    return People(alice.id, bob.id, root.id, ma.id, mb.id)


def page_settings(db_url: str, **overrides: object) -> Settings:
    return Settings(database_url=db_url, rate_limit_enabled=False, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def browser(engine: AsyncEngine, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client as a browser is: it keeps cookies and does not follow redirects by itself."""
    app = create_app(page_settings(db_url), engine=engine, start_workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
