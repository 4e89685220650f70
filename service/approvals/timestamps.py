"""How the approvals domain writes a moment for people: ISO 8601 UTC to the second.

Decisions keep unix seconds (floats) in the database; every message, page and API body shows them this one
way, so an expiry reads the same in Slack, an email, the REST API and an agent's "approval pending" result.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: float) -> str:
    """Unix seconds as an ISO 8601 UTC time to the second: 2026-11-24T12:45:00Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
