"""`EmailSettings`: the email channel's section of the settings, read from `HOLDGATE_SMTP_URL` and
`HOLDGATE_EMAIL_FROM` (the names the README documents, kept when the section moved here).

The service's `Settings` knows nothing about email: the channel asks for this section with
`settings.section("email", EmailSettings)` (tests hand one in through `Settings.channel_settings`).
Email approvals are on when the SMTP URL is set. What they also need from the service's own settings
(the public URL the links point at, the key that signs them) is checked when the channel is built
(`email_problems`), so start-up refuses a half-configured channel with everything that is missing.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.settings import PLACEHOLDER_SECRETS, Settings


class EmailSettings(BaseSettings):
    """See README "Email approvals" for each variable."""

    model_config = SettingsConfigDict(
        env_prefix="HOLDGATE_",  # HOLDGATE_SMTP_URL, HOLDGATE_EMAIL_FROM: the documented names
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # the input holds the SMTP password: never echo it
    )

    smtp_url: SecretStr | None = Field(
        default=None,
        description="smtp://[user:password@]host[:port] (STARTTLS when offered, required with a password; "
        "?starttls=auto|require|off) or smtps://... (TLS from the start); ?timeout=30. Email approvals are on when "
        "it is set.",
    )
    email_from: str | None = Field(default=None, description="The sender, e.g. holdgate <holdgate@example.com>.")


def email_problems(email: EmailSettings, settings: Settings) -> list[str]:
    """What keeps email approvals from working with these settings, in words naming the variable to fix;
    empty when they can run (or are off: no SMTP URL)."""
    if email.smtp_url is None:
        return []
    problems = []
    scheme = email.smtp_url.get_secret_value().split("://", 1)[0].lower()
    if scheme not in ("smtp", "smtps"):
        problems.append("HOLDGATE_SMTP_URL must start with smtp:// or smtps://")
    if not email.email_from:
        problems.append("HOLDGATE_EMAIL_FROM is not set (the sender of approval requests)")
    if not settings.public_url or not settings.public_url.startswith(("http://", "https://")):
        problems.append("HOLDGATE_PUBLIC_URL is not set to an http(s) URL (the links in approval emails)")
    key = settings.secret_key.get_secret_value() if settings.secret_key is not None else ""
    if len(key) < 16 or key.lower() in PLACEHOLDER_SECRETS:
        problems.append("HOLDGATE_SECRET_KEY is missing, a placeholder or shorter than 16 characters")
    return problems
