"""Sending mail: `HOLDGATE_SMTP_URL` parsed once, messages sent with aiosmtplib (never blocking the loop).

`smtp://[user:password@]host[:port][?starttls=auto|require|off]` (port 25 by default) upgrades
with STARTTLS when the server offers it, and insists on it when a password is given (a password is
never sent in clear unless `starttls=off` says so). `smtps://` (port 465 by default) is TLS from
the first byte. User and password are percent-decoded.

A batch of messages goes over one connection. A failure to connect or to hand over a message
raises, and the outbox tries again later; a recipient the server refuses for good (5xx) is logged
and skipped, since retrying cannot help.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

logger = logging.getLogger(__name__)

StartTLS = Literal["auto", "require", "off"]


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    hostname: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    starttls: StartTLS = "auto"
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse `smtp://` or `smtps://`; ValueError says what is wrong (without the password)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ValueError(f"HOLDGATE_SMTP_URL must start with smtp:// or smtps://, not {scheme or '(nothing)'}://")
        if not parts.hostname:
            raise ValueError("HOLDGATE_SMTP_URL has no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("HOLDGATE_SMTP_URL has an invalid port") from None
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        starttls = query.get("starttls", "require" if username else "auto").lower()
        if starttls not in ("auto", "require", "off"):
            raise ValueError(f"HOLDGATE_SMTP_URL: starttls must be auto, require or off, not {starttls!r}")
        return cls(
            hostname=parts.hostname,
            port=port or (465 if scheme == "smtps" else 25),
            username=username,
            password=password,
            use_tls=scheme == "smtps",
            starttls="off" if scheme == "smtps" else starttls,  # type: ignore[arg-type]
            timeout=float(query.get("timeout", 30)),
        )

    def describe(self) -> str:
        """For logs: where mail goes, never the password."""
        who = f"{self.username}@" if self.username else ""
        return f"{'smtps' if self.use_tls else 'smtp'}://{who}{self.hostname}:{self.port}"


class Mailer:
    """Hands messages to the configured SMTP server."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    async def send(self, messages: Sequence[EmailMessage]) -> None:
        """Send every message over one connection; raises when the outbox should try again."""
        if not messages:
            return
        config = self.config
        smtp = aiosmtplib.SMTP(
            hostname=config.hostname,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.use_tls,
            start_tls={"auto": None, "require": True, "off": False}[config.starttls],
            timeout=config.timeout,
        )
        async with smtp:
            for message in messages:
                refused: Mapping[str, aiosmtplib.SMTPResponse | aiosmtplib.SMTPRecipientRefused]
                try:
                    refused, _ = await smtp.send_message(message)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    if any(error.code < 500 for error in exc.recipients):
                        raise  # a temporary refusal (4xx): try the whole message again later
                    refused = {error.recipient: error for error in exc.recipients}
                for recipient, response in refused.items():
                    logger.error(
                        "mail %s to %s refused by %s: %s",
                        message["Message-ID"],
                        recipient,
                        config.describe(),
                        response,
                    )
