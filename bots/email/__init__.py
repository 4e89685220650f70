"""Email approvals (issue 5): requests by SMTP with signed links, decided on a confirmation page.

`plugin` is what the service loads (`service.approvals.channels.ChannelPlugin`).
"""

from bots.email.channel import EmailChannel
from bots.email.registration import plugin
from bots.email.routes import router

__all__ = ["EmailChannel", "plugin", "router"]
