"""How codepulse talks to a mail server: SMTP when SMTP_HOST is set, otherwise the log
(development and tests); nothing at all with MAIL_DISABLED.

Nothing sends through a `Mailer` directly: senders queue a message in their transaction
(`codepulse.mail.outbox.queue_mail`) and the task queue delivers it through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Protocol

import aiosmtplib
import structlog

from codepulse.config import Settings

log = structlog.get_logger("codepulse.mail")

HEADER_POLICY = policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class MailMessage:
    to: str
    subject: str
    text: str
    # Extra headers (List-Unsubscribe, Message-ID, ...), in order.
    headers: tuple[tuple[str, str], ...] = ()


class MailNotConfigured(Exception):
    """No way to send: production without SMTP_HOST. The outbox retries the message as after an
    SMTP error (settings refuse this configuration; this guards settings built around them)."""


class MailDisabled(Exception):
    """MAIL_DISABLED: the operator runs without mail; the outbox records the message `failed`."""


class Mailer(Protocol):
    async def send(self, message: MailMessage) -> None: ...


class SmtpMailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _email(self, message: MailMessage) -> EmailMessage:
        # Header lines up to RFC 5322's 998-character limit: a long URL (List-Unsubscribe) has
        # no space to fold at, and the default 78 would turn it into encoded words no client reads.
        email = EmailMessage(policy=HEADER_POLICY)
        email["From"] = self.settings.MAIL_FROM
        email["To"] = message.to
        email["Subject"] = message.subject
        for name, value in message.headers:
            email[name] = value
        email.set_content(message.text)
        return email

    async def send(self, message: MailMessage) -> None:
        settings = self.settings
        if settings.SMTP_HOST is None:
            raise RuntimeError("SmtpMailer needs SMTP_HOST")
        # Flattened here, with our header policy (aiosmtplib would flatten with a 78-column one).
        await aiosmtplib.send(
            self._email(message).as_bytes(policy=HEADER_POLICY),
            sender=parseaddr(settings.MAIL_FROM)[1],
            recipients=[message.to],
            hostname=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            username=settings.SMTP_USERNAME,
            password=settings.SMTP_PASSWORD.get_secret_value() if settings.SMTP_PASSWORD else None,
            start_tls=settings.SMTP_SECURITY == "starttls",
            use_tls=settings.SMTP_SECURITY == "tls",
            timeout=settings.SMTP_TIMEOUT_SECONDS,
        )


class LogMailer:
    """Development and tests without SMTP: the message goes to the log so its link can be
    followed. Production never logs a body (it holds single-use links) and never pretends a
    message went out: it raises MailNotConfigured."""

    def __init__(self, settings: Settings) -> None:
        self.production = settings.is_production

    async def send(self, message: MailMessage) -> None:
        if self.production:
            raise MailNotConfigured("SMTP_HOST is not set (set it, or MAIL_DISABLED=true to run without mail)")
        log.info("mail.logged", to=message.to, subject=message.subject, body=message.text)


class DisabledMailer:
    async def send(self, message: MailMessage) -> None:
        raise MailDisabled("mail is disabled (MAIL_DISABLED=true)")


def build_mailer(settings: Settings) -> Mailer:
    backend = settings.mail_backend
    if backend == "disabled":
        return DisabledMailer()
    return SmtpMailer(settings) if backend == "smtp" else LogMailer(settings)
