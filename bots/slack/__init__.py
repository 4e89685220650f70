"""Slack approvals (issue 4): requests as Slack messages, decisions from buttons and a reason modal.

`SlackChannel` is the outbox's channel (and starts Socket Mode); `router` serves `/slack/interactions`;
`plugin` is what the service loads (`service.approvals.channels.ChannelPlugin`).
"""

from bots.slack.channel import SlackChannel
from bots.slack.registration import plugin
from bots.slack.routes import router

__all__ = ["SlackChannel", "plugin", "router"]
