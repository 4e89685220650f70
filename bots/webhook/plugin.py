"""The webhook channel's `plugin`: how the service builds it from its settings section.

The channel has no inbound HTTP (`router` None: decisions come back through the REST API with a person's
token) and no contacts (`check_contact` None: it posts to one URL, not to people).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bots.webhook.channel import WebhookChannel, WebhookTarget
from bots.webhook.settings import WebhookSettings
from service.settings import PLACEHOLDER_SECRETS, Settings, is_loopback_host

if TYPE_CHECKING:
    from fastapi import APIRouter

logger = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 16


class WebhookPlugin:
    name = "webhook"
    router: APIRouter | None = None
    check_contact: Callable[[str], str | None] | None = None

    def build(self, settings: Settings) -> WebhookChannel | None:
        """None without `HOLDGATE_WEBHOOK_URL`; refuses (ValueError naming the settings, never their values) a
        URL that is not http(s) or a secret that is missing, a placeholder or shorter than 16 characters."""
        section = settings.section(self.name, WebhookSettings)
        if section.url is None:
            return None
        problems = []
        try:
            target: WebhookTarget | None = WebhookTarget.parse(section.url.get_secret_value())
        except ValueError as exc:
            target = None
            problems.append(str(exc))
        secret = section.secret.get_secret_value() if section.secret is not None else ""
        if len(secret) < MIN_SECRET_LENGTH or secret.lower() in PLACEHOLDER_SECRETS:
            problems.append(
                f"HOLDGATE_WEBHOOK_SECRET is missing, a placeholder or shorter than {MIN_SECRET_LENGTH} characters "
                "(it signs every body)"
            )
        if target is None or problems:
            raise ValueError("webhook notifications are enabled (HOLDGATE_WEBHOOK_URL) but " + "; ".join(problems))
        if target.url.scheme == "http" and not is_loopback_host(target.url.host or ""):
            logger.warning(
                "webhook: %s is plain http: the bodies (decisions with the call's redacted arguments) travel "
                "unencrypted; the signature proves who sent them, it does not hide them",
                target.origin,
            )
        logger.info("webhook notifications: POST to %s", target.origin)
        return WebhookChannel(
            target,
            secret.encode("utf-8"),
            public_url=settings.public_url,
            timeout_s=section.timeout_s,
            max_body_bytes=section.max_body_bytes,
        )
