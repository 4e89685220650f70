"""The Slack channel as the service loads it (`HOLDGATE_CHANNELS` names `bots.slack`): its settings
section, its inbound route, its `holdgate slack` commands, and what a Slack contact looks like."""

from __future__ import annotations

import re
from collections.abc import Callable

import typer
from fastapi import APIRouter

from bots.slack import cli
from bots.slack.channel import SlackChannel
from bots.slack.routes import router
from bots.slack.settings import SlackSettings
from service.approvals.channels import Channel
from service.settings import Settings

SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


def check_slack_id(value: str) -> str | None:
    """A person's Slack contact is their user ID (U0123ABC, or W… on Enterprise Grid), never a name."""
    return None if SLACK_USER_ID.match(value) else f"{value!r} is not a Slack user ID (like U0123ABC)"


class SlackPlugin:
    """On when `HOLDGATE_SLACK_BOT_TOKEN` is set."""

    def __init__(self) -> None:
        self.name = SlackChannel.name
        self.router: APIRouter | None = router
        self.check_contact: Callable[[str], str | None] | None = check_slack_id
        self.cli: typer.Typer = cli.app

    def build(self, settings: Settings) -> Channel | None:
        if settings.section("slack", SlackSettings).bot_token is None:
            return None
        return SlackChannel.from_settings(settings)


plugin = SlackPlugin()
