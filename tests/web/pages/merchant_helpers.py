"""Helpers of the merchant page tests: signing in as a merchant owner, marking the session
stepped up (the step-up page is the auth work's), and the checks every page shares."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.auth.sessions import WebSession, mark_stepped_up
from tests.web.pages.conftest import csrf_of, sign_in


async def signed_in(browser: httpx.AsyncClient, email: str = "alice@example.com") -> None:
    r = await sign_in(browser, email)
    assert r.status_code == 303, r.text


async def step_up(sessions: async_sessionmaker[AsyncSession], user_id: str) -> None:
    """As if the user had just re-proved a factor in every live session."""
    async with sessions() as s, s.begin():
        for row in (await s.execute(select(WebSession).where(
                WebSession.user_id == user_id))).scalars():
            await mark_stepped_up(s, session_id=row.id)


def fresh() -> dict[str, str]:
    """A form's own key (the hidden field a page renders into the forms that make something),
    new: the form sent as a new request."""
    return {"idempotency_key": uuid.uuid4().hex}


async def token_of(browser: httpx.AsyncClient, path: str) -> str:
    page = await browser.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)
