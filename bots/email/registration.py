"""The email channel as the service loads it (`HOLDGATE_CHANNELS` names `bots.email`): its settings
section, its confirmation pages, and what an email contact looks like."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter

from bots.email.channel import EmailChannel
from bots.email.routes import router
from bots.email.settings import EmailSettings
from service.approvals.channels import Channel
from service.policy.contacts import check_email
from service.settings import Settings


class EmailPlugin:
    """On when `HOLDGATE_SMTP_URL` is set; then refuses to build without the sender, the public URL
    and the secret key (ValueError naming each), so start-up refuses a half-configured channel."""

    def __init__(self) -> None:
        self.name = EmailChannel.name
        self.router: APIRouter | None = router
        self.check_contact: Callable[[str], str | None] | None = check_email

    def build(self, settings: Settings) -> Channel | None:
        if settings.section("email", EmailSettings).smtp_url is None:
            return None
        return EmailChannel.from_settings(settings)


plugin = EmailPlugin()
