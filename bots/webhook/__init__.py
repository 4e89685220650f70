"""Webhook notifications (issue 15): each approval request, reminder and update as a signed JSON POST to
one URL; decisions come back through the REST API.

A channel built only on the seam (`service.approvals.channels`): this folder, its settings section
(`WebhookSettings`, `HOLDGATE_WEBHOOK_*`) and `"bots.webhook"` in the channel list are all it takes.
"""

from bots.webhook.channel import WebhookChannel
from bots.webhook.plugin import WebhookPlugin
from bots.webhook.settings import WebhookSettings
from service.approvals.channels import ChannelPlugin

plugin: ChannelPlugin = WebhookPlugin()

__all__ = ["WebhookChannel", "WebhookSettings", "plugin"]
