"""Shared set-up for the webhook tests: the independent signature check a receiver makes, the settings
that turn the channel on, and a gateway that notifies a `Receiver`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bots.webhook import WebhookChannel, WebhookSettings
from bots.webhook import plugin as webhook_plugin
from service.approvals.schemas import ApproverView, DecisionView
from service.settings import Settings
from tests.approvals.support import approval_policy
from tests.support.harness import Gateway, free_port, run_gateway, servers
from tests.webhook.receiver import Received

SECRET = "webhook-test-secret-0123456789abcdef"


def verified(received: Received, secret: str = SECRET) -> bool:
    """What a receiver does, written here from the README rather than imported from the channel: HMAC-SHA256
    of "<timestamp>.<raw body>" with the shared secret, compared in constant time."""
    timestamp = received.headers["X-Holdgate-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(received.headers["X-Holdgate-Signature"], f"sha256={expected}")


def webhook_policy(**approval: Any) -> dict[str, Any]:
    """approval_policy with cancel-async-job's requests going to the webhook."""
    return approval_policy(**{"channels": ["webhook"], **approval})


@asynccontextmanager
async def webhook_gateway(
    tmp_path: Path,
    url: str,
    *,
    policy: dict[str, Any] | None = None,
    webhook: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[Gateway]:
    """holdgate with the webhook channel POSTing to `url` (its section's other settings in `webhook`); links
    in the bodies point at this holdgate."""
    port = free_port()
    settings: dict[str, Any] = {
        "channel_settings": {"webhook": WebhookSettings(**{"url": url, "secret": SECRET, **(webhook or {})})},
        "public_url": f"http://127.0.0.1:{port}",
        "approval_hold_s": 30,
        "outbox_poll_interval_s": 0.05,
        **overrides,
    }
    async with run_gateway(
        tmp_path,
        policy=policy or webhook_policy(),
        servers=servers(tmp_path),
        port=port,
        **settings,
    ) as gw:
        yield gw


PUBLIC_URL = "https://holdgate.example.com"


def a_decision(**overrides: Any) -> DecisionView:
    fields: dict[str, Any] = {
        "id": "d_AbC-123_xyz",
        "status": "pending",
        "server": "jobs",
        "tool": "cancel-async-job",
        "grant": "agent",
        "arguments": {"jobId": "job-7", "token": "[redacted]"},
        "args_sha256": "ab" * 32,
        "policy_version": "1",
        "rule": "cancel-async-job",
        "approvers": ["alice", "bob"],
        "approver_details": [ApproverView(name="alice"), ApproverView(name="bob")],
        "quorum": 1,
        "channels": ["webhook"],
        "on_timeout": "deny",
        "created_at": "2026-12-02T00:00:00Z",
        "expires_at": "2026-12-02T00:15:00Z",
        "released": False,
        "state": "pending",
    }
    return DecisionView(**{**fields, **overrides})


def channel_for(url: str, **section: Any) -> WebhookChannel:
    settings = Settings(
        _env_file=None,
        public_url=PUBLIC_URL,
        channel_settings={"webhook": WebhookSettings(url=url, secret=SECRET, **section)},
    )
    built = webhook_plugin.build(settings)
    assert isinstance(built, WebhookChannel)
    return built


@asynccontextmanager
async def open_channel(url: str, **section: Any) -> AsyncIterator[WebhookChannel]:
    channel = channel_for(url, **section)
    try:
        yield channel
    finally:
        await channel.aclose()
