"""Email approvals (issue 5): requests by SMTP with signed links, decided on a confirmation page."""

from bots.email.channel import EmailChannel
from bots.email.routes import router

__all__ = ["EmailChannel", "router"]
