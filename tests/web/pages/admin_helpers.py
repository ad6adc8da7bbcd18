"""Signing an operator in for the admin console's tests: through the login form, then the
second factor marked on the session row (until the TOTP pages land)."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts import service as acc
from satvault.accounts.models import User
from satvault.auth.sessions import WebSession, mark_mfa
from tests.web.pages.conftest import PASSWORD, csrf_of, sign_in


async def sign_in_admin(client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession],
                        email: str, *, mfa: bool = True) -> None:
    client.cookies.clear()
    r = await sign_in(client, email)
    assert r.status_code == 303, r.text
    if mfa:
        async with sessions() as s, s.begin():
            session_id = (await s.execute(
                select(WebSession.id).join(User, User.id == WebSession.user_id)
                .where(User.email == email, WebSession.revoked_at.is_(None))
                .order_by(WebSession.created_at.desc()).limit(1))).scalar_one()
            await mark_mfa(s, session_id=session_id)


async def second_admin(sessions: async_sessionmaker[AsyncSession],
                       email: str = "ops@example.com") -> str:
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email=email, password=PASSWORD, is_admin=True)
    return user.id


async def token_of(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)
