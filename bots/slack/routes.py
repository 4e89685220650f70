"""`POST /slack/interactions`: Slack's signed interaction payloads (filled in by the Slack channel)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["slack"])
