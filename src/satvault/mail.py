"""Sending a message through an SMTP relay: smtplib in a worker thread (it blocks), one
connection per message, STARTTLS and login when configured. The sign-in mail
(:mod:`satvault.auth.mail`) and the alerts' e-mail channel (:mod:`satvault.metrics.alerts`)
both send through it; neither sends with a database transaction open."""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage

__all__ = ["SmtpRelay"]


@dataclass(frozen=True, slots=True)
class SmtpRelay:
    host: str
    port: int = 25
    starttls: bool = False
    username: str = ""
    password: str = ""
    timeout: float = 10.0

    def send_now(self, msg: EmailMessage) -> None:
        """Blocking: the caller's thread waits for the relay."""
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(msg)

    async def send(self, msg: EmailMessage) -> None:
        await asyncio.to_thread(self.send_now, msg)
