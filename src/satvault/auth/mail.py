"""Sending the sign-in mail (verification links, password resets) through an SMTP relay.

Through :class:`satvault.mail.SmtpRelay`, as the alerts' e-mail channel: one message at a time, sent
after the unit of work that made its token has committed (never with a transaction open).
With no relay configured, development writes the message to the log with a warning (so a
developer can follow the link); production refuses with :class:`MailUnavailable`, because a
sign-up whose mail silently went nowhere is worse than an error.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from email.message import EmailMessage

from satvault.auth.errors import MailUnavailable
from satvault.config import Settings
from satvault.logs import get_logger
from satvault.mail import SmtpRelay

__all__ = ["Mail", "Mailer"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str


class Mailer:
    def __init__(self, *, host: str, port: int = 25, sender: str = "satvault@localhost",
                 starttls: bool = False, username: str = "", password: str = "",
                 development: bool = True, timeout: float = 10.0) -> None:
        self.host, self.sender, self.development = host, sender, development
        self.relay = SmtpRelay(host, port, starttls, username, password, timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
        return cls(host=settings.smtp_host, port=settings.smtp_port, sender=settings.mail_from,
                   starttls=settings.smtp_starttls, username=settings.smtp_username,
                   password=password, development=settings.environment == "development")

    def message(self, mail: Mail) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = mail.subject
        msg["From"] = self.sender
        msg["To"] = mail.to
        msg.set_content(mail.body)
        return msg

    async def send(self, mail: Mail) -> None:
        if not self.host:
            if not self.development:
                raise MailUnavailable("no SMTP relay is configured (smtp_host)")
            # Development only: the link in the body is the point of logging it.
            log.warning("mail_not_sent_no_smtp_host", to=mail.to, subject=mail.subject,
                        body=mail.body)
            return
        try:
            await self.relay.send(self.message(mail))
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("mail_failed", to=mail.to, subject=mail.subject,
                        error=type(exc).__name__)
            raise MailUnavailable("the mail relay refused or could not be reached") from exc
