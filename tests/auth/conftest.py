"""Fixtures for the sign-in tests: a real SMTP server (aiosmtpd, in this process) whose mail
the tests read, and the app wired to it."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from satvault.config import Settings
from satvault.web.app import create_app


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]

    def last_link(self, address: str, path: str) -> str:
        """The token of the newest mailed link to ``path`` for ``address``."""
        for message in reversed(self.to(address)):
            body = message.get_payload(decode=True).decode()
            found = re.search(rf"{re.escape(path)}\?token=([A-Za-z0-9_-]+)", body)
            if found:
                return found.group(1)
        raise AssertionError(f"no mail to {address} with a {path} link")


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


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
