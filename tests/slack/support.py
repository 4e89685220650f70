"""Set-up for the Slack tests: a gateway wired to the fake Slack, and interactions signed like Slack's."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2

from bots.slack.settings import SlackSettings
from service.approvals.schemas import ApproverView, DecisionView
from tests.approvals.support import approval_policy
from tests.slack.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.support.harness import Gateway, run_gateway, servers

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ALICE = "U0ALICE"  # alice's Slack ID in tests.approvals.support.approval_policy
STRANGER = "U0STRANGER"
CHANNEL = "C0APPROVALS"


def slack_policy(**approval: Any) -> dict[str, Any]:
    """cancel-async-job needs approval by group ops (alice has a Slack ID, bob has not), asked in Slack."""
    return approval_policy(**{"channels": ["slack"], "slack_channel": CHANNEL, **approval})


def write_catalog(tmp_path: Path) -> None:
    """A risk catalog for the demo jobs server, so the message has a risk line."""
    catalog = tmp_path / "config" / "catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    (catalog / "jobs.json").write_text(
        json.dumps(
            {
                "server": "jobs",
                "tools": {
                    "cancel-async-job": {"risk": "destructive", "level": "high", "note": "Cancels a running job."}
                },
            }
        )
    )


@asynccontextmanager
async def slack_gateway(
    tmp_path: Path, fake: FakeSlack, *, policy: dict[str, Any] | None = None, socket_mode: bool = False, **overrides
) -> AsyncIterator[Gateway]:
    """holdgate with Slack configured against `fake` (HTTP interactions, or Socket Mode)."""
    write_catalog(tmp_path)
    way_in = {"app_token": APP_TOKEN} if socket_mode else {"signing_secret": SIGNING_SECRET}
    slack = SlackSettings(_env_file=None, bot_token=BOT_TOKEN, api_url=fake.url, **way_in)
    settings: dict[str, Any] = {
        "channel_settings": {"slack": slack},
        "public_url": "https://holdgate.example.com",
        "approval_hold_s": 30,
        "outbox_poll_interval_s": 0.05,
        "outbox_retry_base_s": 0.05,
    }
    settings.update(overrides)
    async with run_gateway(tmp_path, policy=policy or slack_policy(), servers=servers(tmp_path), **settings) as gw:
        yield gw


def sign(body: str, *, secret: str = SIGNING_SECRET, timestamp: str | None = None) -> dict[str, str]:
    """Slack's v0 request signature headers for `body`."""
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}


def form_body(payload: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(payload)})


async def post_interaction(
    gw: Gateway,
    payload: dict[str, Any] | None = None,
    *,
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    """POST an interaction to /slack/interactions, signed correctly unless `headers` say otherwise."""
    body = form_body(payload) if body is None else body
    headers = sign(body) if headers is None else headers
    async with httpx2.AsyncClient(base_url=gw.url, timeout=30) as client:
        return await client.post(
            "/slack/interactions",
            content=body.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )


def actions_of(message: dict[str, Any]) -> list[str]:
    return [e.get("action_id") for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


def text_of_message(message: dict[str, Any]) -> str:
    """Every piece of text in a message's blocks, joined (for assertions)."""
    parts: list[str] = [message.get("text", "")]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                parts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message["blocks"])
    return "\n".join(parts)


def decision_view(**changes: Any) -> DecisionView:
    """A DecisionView built by hand, for the channel and the message builders alone."""
    base = {
        "id": "d_abc",
        "status": "pending",
        "server": "jobs",
        "tool": "cancel-async-job",
        "grant": "ci-bot",
        "arguments": {"jobId": "j-1"},
        "args_sha256": "0" * 64,
        "policy_version": "v1",
        "rule": "jobs/cancel-*",
        "rule_reason": "cancelling loses work",
        "approvers": ["alice", "bob"],
        "approver_details": [ApproverView(name="alice", slack_ids=["U0ALICE"]), ApproverView(name="bob")],
        "quorum": 1,
        "channels": ["slack"],
        "on_timeout": "deny",
        "created_at": "2026-11-24T12:00:00Z",
        "expires_at": "2026-11-24T12:15:00Z",
        "released": False,
    }
    return DecisionView(**{**base, **changes})
