"""Prometheus metrics, served at /metrics: what an operator graphs and alerts on.

Counted where the facts are already at hand, with no extra work on the call's path: tool calls as
their audit records are queued, decisions as their changes commit, held calls from the bus.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

TOOL_CALLS = Counter(
    "holdgate_tool_calls_total", "tools/call requests by server, verdict and outcome", ["server", "verdict", "outcome"]
)
TOOL_CALL_SECONDS = Histogram(
    "holdgate_tool_call_seconds",
    "Time a tools/call spent in holdgate, held time included",
    ["server", "verdict"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
DECISIONS = Counter("holdgate_decisions_total", "Decision changes by status", ["status"])
HELD_CALLS = Gauge("holdgate_held_calls", "Calls waiting for a decision in this process")
TOOLS_NOT_ACCEPTED = Gauge(
    "holdgate_tools_not_accepted",
    "Upstream tools whose definition changed since a person accepted it, or that are new (as this process knows)",
)


def count_call(server: str, verdict: str, outcome: str | None, duration_ms: float | None) -> None:
    TOOL_CALLS.labels(server, verdict, outcome or "none").inc()
    if duration_ms is not None:
        TOOL_CALL_SECONDS.labels(server, verdict).observe(duration_ms / 1000)


def count_decision(status: str) -> None:
    DECISIONS.labels(status).inc()


def watch_held_calls(count: Callable[[], int]) -> None:
    HELD_CALLS.set_function(count)


def watch_tools_not_accepted(count: Callable[[], int]) -> None:
    TOOLS_NOT_ACCEPTED.set_function(count)


AUDIT_UNRECORDABLE = Counter(
    "holdgate_audit_unrecordable_total",
    "Calls audited by a minimal 'unrecordable' record: their full record could not be stored",
)


def count_unrecordable(records: int = 1) -> None:
    AUDIT_UNRECORDABLE.inc(records)


OPEN_SESSIONS = Gauge("holdgate_open_sessions", "MCP sessions (2025-era) open in this process, all servers")
REFUSED_SESSIONS = Counter(
    "holdgate_refused_sessions_total", "New MCP sessions refused, by the limit that refused them", ["limit"]
)


def watch_open_sessions(count: Callable[[], int]) -> None:
    OPEN_SESSIONS.set_function(count)


def count_refused_session(limit: str) -> None:
    REFUSED_SESSIONS.labels(limit).inc()
