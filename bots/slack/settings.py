"""`SlackSettings`: the Slack channel's section of the settings, read from `HOLDGATE_SLACK_*`.

The service's `Settings` knows nothing about Slack: the channel asks for this section with
`settings.section("slack", SlackSettings)` (tests hand one in through `Settings.channel_settings`).
Slack approvals are on when the bot token is set; then a way for clicks to come back is required.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SlackSettings(BaseSettings):
    """See README "Slack approvals" for each variable."""

    model_config = SettingsConfigDict(
        env_prefix="HOLDGATE_SLACK_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # the input holds the tokens: never echo it
    )

    bot_token: SecretStr | None = Field(
        default=None, description="The bot token (xoxb-...); Slack approvals are on when it is set."
    )
    signing_secret: SecretStr | None = Field(
        default=None, description="Verifies POST /slack/interactions (HTTP interactivity)."
    )
    app_token: SecretStr | None = Field(
        default=None, description="An app-level token (xapp-...): Socket Mode instead of HTTP interactivity."
    )
    api_url: str | None = Field(
        default=None, description="Slack Web API base URL (tests, Enterprise Grid proxies); default Slack's."
    )
    default_channel: str | None = Field(
        default=None,
        description="Slack channel for approval requests whose rule names no slack_channel and whose "
        "approvers have no Slack IDs to DM.",
    )

    @model_validator(mode="after")
    def _needs_a_way_in(self) -> SlackSettings:
        if self.bot_token is not None and self.signing_secret is None and self.app_token is None:
            raise ValueError(
                "HOLDGATE_SLACK_BOT_TOKEN is set but Slack clicks cannot reach holdgate: set "
                "HOLDGATE_SLACK_SIGNING_SECRET (HTTP, /slack/interactions) or HOLDGATE_SLACK_APP_TOKEN (Socket Mode)"
            )
        return self
