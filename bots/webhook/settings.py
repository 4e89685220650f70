"""`WebhookSettings`: the webhook channel's section of the configuration, read from `HOLDGATE_WEBHOOK_*`.

The URL is a secret like the signing key: receivers often carry a token in the path or query
(`https://hooks.example/T0/B0/xyz`), or credentials in the userinfo (`https://user:pass@host/`), so it
is kept as a `SecretStr` and never echoed (not in a validation error, not in a log line). Logs name
the receiver by its origin only (`WebhookTarget.origin`).
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MAX_BODY_BYTES = 256 * 1024


class WebhookSettings(BaseSettings):
    """`HOLDGATE_WEBHOOK_URL` turns the channel on; see README "Webhook"."""

    model_config = SettingsConfigDict(
        env_prefix="HOLDGATE_WEBHOOK_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # the input holds the URL and the secret
    )

    url: SecretStr | None = Field(
        default=None, description="where each notification is POSTed (http:// or https://); unset: channel off"
    )
    secret: SecretStr | None = Field(
        default=None, description="the HMAC-SHA256 key of X-Holdgate-Signature (16+ characters, not a placeholder)"
    )
    timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        allow_inf_nan=False,
        description="the whole POST (connect, send, answer) must be done within this; else it is retried later",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=4096,
        description="a body larger than this leaves out the call's arguments (the receiver reads them from "
        "GET /api/decisions/{id}); `omitted` in the body says what was left out",
    )
