"""What the dashboard keeps while the service runs, built with the app (`service.app.build_state`).

One object per app, typed, on `AppState.dashboard`; routes get it with `DashboardDep`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from itsdangerous import URLSafeTimedSerializer
from mcp_types import ToolAnnotations

from service.approvals import ApprovalService
from service.dashboard.live import LiveFeed
from service.identity import OidcClient
from service.settings import Settings

SESSION_SALT = "holdgate-dashboard-session"


@dataclass
class DashboardState:
    serializer: URLSafeTimedSerializer
    """Signs the session cookie (`auth.py`): under HOLDGATE_SECRET_KEY, else a key of this process only."""
    live: LiveFeed
    """Decision changes of this process, pushed to open pages (`/events`)."""
    poll_interval: float = 2.0
    """How often an open page's event stream looks for decisions taken in another process."""
    oidc: OidcClient | None = None
    """Sign-in through the team's OpenID provider (HOLDGATE_OIDC_ISSUER); None: token sign-in only."""
    annotations: dict[tuple[str, str], ToolAnnotations] = field(default_factory=dict)
    """Tool annotations by (server, tool), as last listed by the rules page: the queue's risk when no catalog
    knows the tool."""

    @classmethod
    def build(
        cls, settings: Settings, approvals: ApprovalService, *, clock: Callable[[], float] = time.time
    ) -> DashboardState:
        key = settings.secret_key.get_secret_value() if settings.secret_key else secrets.token_hex(32)
        live = LiveFeed()
        live.attach(approvals)
        oidc = OidcClient(settings.oidc, clock=clock) if settings.oidc.enabled else None
        return cls(URLSafeTimedSerializer(key, salt=SESSION_SALT), live, oidc=oidc)


def get_dashboard(request: Request) -> DashboardState:
    return request.app.state.holdgate.dashboard


DashboardDep = Annotated[DashboardState, Depends(get_dashboard)]
