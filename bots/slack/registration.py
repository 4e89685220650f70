"""The Slack channel as the service loads it (`HOLDGATE_CHANNELS` names `bots.slack`): its settings
section, its inbound route, its `holdgate slack` commands, and what a Slack contact looks like."""

from __future__ import annotations

from collections.abc import Callable

import typer
from fastapi import APIRouter

from bots.slack import cli
from bots.slack.channel import SlackChannel
from bots.slack.routes import router
from bots.slack.settings import SlackSettings
from bots.slack.socket_mode import SocketModeListener
from service.approvals.channels import Channel
from service.policy.contacts import check_slack_id
from service.settings import Settings


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
        channel = SlackChannel.from_settings(settings)
        if channel.app_token:  # clicks come over Socket Mode's websocket (no public URL needed)
            channel.socket_mode = SocketModeListener(channel, channel.app_token)
        return channel


plugin = SlackPlugin()
