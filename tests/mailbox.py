"""A real SMTP server for the tests (aiosmtpd, in this process, on a free 127.0.0.1 port) and
the mail it received: the sign-in mail's tests and the alerts' e-mail channel read it."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller

__all__ = ["Mailbox", "smtp"]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.recipients: list[list[str]] = []  # each message's envelope recipients
        self.delay = 0.0  # seconds each message waits before its 250, as a slow relay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.messages.append(message_from_bytes(envelope.original_content))
        self.recipients.append(list(envelope.rcpt_tos))
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
    """The server and its port, for the test's settings."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox()
    # aiosmtpd's server thread logs every connection at INFO ("EOF received", including the
    # controller's own start-up probe) and may do so after pytest has closed the test's
    # captured streams: "--- Logging error ---" in CI's output. Its warnings still show.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()
