"""Fixtures for the sign-in tests: a real SMTP server (aiosmtpd, in this process) whose mail
the tests read, and the app wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from satvault.config import Settings
from satvault.web.app import create_app
from tests.mailbox import Mailbox

__all__ = ["Mailbox", "mailbox"]


@pytest.fixture
def mailbox(smtp: tuple[Mailbox, int]) -> Mailbox:
    return smtp[0]


def settings_for(db_url: str, smtp_port: int, **extra: Any) -> Settings:
    return Settings(database_url=db_url, lightning_backend="none", smtp_host="127.0.0.1",
                    smtp_port=smtp_port, mail_from="satvault@example.com",
                    public_url="http://sv.test", **extra)


@asynccontextmanager
async def client_for(engine: Any, db_url: str, smtp_port: int,
                     **extra: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(db_url, smtp_port, **extra), engine=engine,
                     start_workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sv.test") as client:
            yield client


@pytest.fixture
async def client(engine: Any, db_url: str, smtp: tuple[Mailbox, int]
                 ) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(engine, db_url, smtp[1]) as c:
        yield c
