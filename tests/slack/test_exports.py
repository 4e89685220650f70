"""`bots.slack` exports the channel, the router and the plug-in, nothing else."""

import bots.slack
from bots.slack.channel import SlackChannel
from bots.slack.routes import router


def test_public_names():
    assert bots.slack.__all__ == ["SlackChannel", "plugin", "router"]
    assert bots.slack.SlackChannel is SlackChannel and bots.slack.router is router
    assert bots.slack.plugin.name == "slack" and bots.slack.plugin.router is router
    assert [route.path for route in router.routes] == ["/slack/interactions"]
