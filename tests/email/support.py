"""Shared set-up for the email tests: a real SMTP server (aiosmtpd) in-process, a gateway that mails
through it, and a person's browser (open a link, submit its confirmation form)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx2
from aiosmtpd.controller import Controller

from bots.email.settings import EmailSettings
from tests.approvals.support import approval_policy
from tests.support.harness import Gateway, free_port, run_gateway, servers

SECRET = "test-secret-key-for-email-links-0123456789"
SENDER = "holdgate <holdgate@gateway.example>"
EMAILS = {"alice": "alice@example.com", "bob": "Bob@Example.com", "carol": "carol@example.com"}
LINK = re.compile(r"^(Approve|Deny):\s+(\S+)\s*$", re.MULTILINE)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()

    @property
    def html(self) -> str:
        return self.message.get_body(("html",)).get_content()

    def links(self) -> dict[str, str]:
        """{"approve": url, "deny": url} from the plain-text part."""
        return {action.lower(): url for action, url in LINK.findall(self.text)}


class SmtpSink:
    """An aiosmtpd server on a port of our choosing (its Controller cannot take port 0) that keeps
    every message it accepts."""

    def __init__(self, port: int | None = None, **smtp_options: Any) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self._options = smtp_options
        self._controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's handler hook
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def start(self) -> SmtpSink:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **self._options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def wait_for(self, count: int, where: Callable[[Received], bool] = lambda _: True) -> list[Received]:
        """The first `count` received messages matching `where`, waiting (bounded) for them."""
        for _ in range(500):
            found = [r for r in self.received if where(r)]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {count} message(s), got {len(found)}: {[r.message['Subject'] for r in found]}")

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address.lower() in (a.lower() for a in r.rcpt_tos)]


def email_policy(**approval: Any) -> dict[str, Any]:
    """approval_policy's people with addresses; cancel-async-job asks alice and bob by email."""
    policy = approval_policy(**{"channels": ["email"], **approval})
    for name, address in EMAILS.items():
        policy["people"][name]["email"] = address
    return policy


def email_settings(smtp_port: int, gateway_port: int) -> dict[str, Any]:
    """`Settings` keywords for email approvals through the sink on `smtp_port`, links pointing at the gateway."""
    return {
        "channel_settings": {
            "email": EmailSettings(_env_file=None, smtp_url=f"smtp://127.0.0.1:{smtp_port}", email_from=SENDER)
        },
        "public_url": f"http://127.0.0.1:{gateway_port}",
        "secret_key": SECRET,
    }


@asynccontextmanager
async def email_gateway(
    tmp_path: Path, smtp_port: int, *, policy: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[Gateway]:
    """holdgate with email approvals through the sink on `smtp_port`, links pointing at itself."""
    port = free_port()
    settings = {
        **email_settings(smtp_port, port),
        "approval_hold_s": 30,
        "outbox_poll_interval_s": 0.05,
        **overrides,
    }
    async with run_gateway(
        tmp_path, policy=policy or email_policy(), servers=servers(tmp_path), port=port, **settings
    ) as gw:
        yield gw


def browser_headers(gw: Gateway) -> dict[str, str]:
    """What a browser sends with the confirmation page's form."""
    return {"Origin": gw.url, "Sec-Fetch-Site": "same-origin"}


async def open_link(url: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as client:
        return await client.get(url)


async def submit(
    url: str,
    *,
    csrf: str | None,
    reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    """POST the confirmation form of `url` with this anti-forgery value."""
    data = {k: v for k, v in {"csrf": csrf, "reason": reason}.items() if v is not None}
    async with httpx2.AsyncClient(timeout=30) as client:
        return await client.post(url, data=data, headers=headers or {})


async def confirm(gw: Gateway, url: str, reason: str | None = None) -> httpx2.Response:
    """What a person does: open the link, then press the page's button."""
    page = await open_link(url)
    assert page.status_code == 200, page.text
    return await submit(url, csrf=csrf_of(page.text), reason=reason, headers=browser_headers(gw))


def subject(mail: Received) -> str:
    """The Subject as a mail client shows it (the stdlib may fold a long one right after the colon)."""
    return " ".join(mail.message["Subject"].split())


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has a form"
    return match.group(1)
