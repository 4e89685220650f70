"""Prometheus metrics, served at /metrics: what an operator graphs and alerts on.

Counted where the facts are already at hand, with no extra work on the call's path: tool calls as
their audit records are queued, decisions as their changes commit, held calls from the bus. What
several replicas share (the pending decisions) is read from the database at scrape time, so every
replica reports the same, right number; what belongs to one process (its upstreams, its policy file,
its held calls) is that process's.

Names follow Prometheus' conventions: durations are `..._duration_seconds` histograms, counters end in
`_total`. The client's `_created` series (one per counter and histogram child, the time it was first
used) are off: they double the series count and no dashboard here reads them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()

logger = logging.getLogger(__name__)

TOOL_CALLS = Counter(
    "holdgate_tool_calls_total", "tools/call requests by server, verdict and outcome", ["server", "verdict", "outcome"]
)
TOOL_CALL_SECONDS = Histogram(
    "holdgate_tool_call_duration_seconds",
    "Time a tools/call spent in holdgate, held time included",
    ["server", "verdict"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
DECISIONS = Counter("holdgate_decisions_total", "Decision changes by status", ["status"])
DECISION_SECONDS = Histogram(
    "holdgate_decision_duration_seconds",
    "Time from a decision's opening to its ending (by the ending: approved, denied, expired, cancelled)",
    ["ending"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200, 2592000),
)
PENDING_DECISIONS = Gauge(
    "holdgate_pending_decisions",
    "Decisions waiting for a person, across every replica (read from the database at scrape time)",
)
HELD_CALLS = Gauge("holdgate_held_calls", "Calls waiting for a decision in this process")
OUTBOX_FAILURES = Counter(
    "holdgate_outbox_failures_total",
    "Failed deliveries of approval notifications, by channel (each failed attempt; retried with backoff)",
    ["channel"],
)
OUTBOX_GIVEN_UP = Counter(
    "holdgate_outbox_given_up_total",
    "Approval notifications given up for good, by channel (attempts exhausted, or the channel is not configured)",
    ["channel"],
)
UPSTREAM_UP = Gauge(
    "holdgate_upstream_up", "1 while this process's shared session to the upstream server is connected", ["server"]
)
POLICY_RELOAD_SUCCESS = Gauge(
    "holdgate_policy_last_reload_success",
    "1 if the last load of the policy file succeeded, 0 if it was refused (an older version stays in force)",
)
POLICY_RELOAD_TIME = Gauge(
    "holdgate_policy_last_reload_timestamp_seconds", "When the policy file was last loaded or refused (unix seconds)"
)
TOOLS_NOT_ACCEPTED = Gauge(
    "holdgate_tools_not_accepted",
    "Upstream tools whose definition changed since a person accepted it, or that are new (as this process knows)",
)


_CALL_SERIES: dict[tuple[str, str, str], tuple[Any, Any]] = {}
"""`count_call`'s counter and histogram children by (server, verdict, outcome): `labels()` checks and locks on
every use, a third of this function's cost on each tools/call. The metrics keep their children for the life of
the process (nothing here removes one), so holding them adds no series and no memory the metrics don't hold."""


def count_call(server: str, verdict: str, outcome: str | None, duration_ms: float | None) -> None:
    key = (server, verdict, outcome or "none")
    series = _CALL_SERIES.get(key)
    if series is None:
        series = _CALL_SERIES[key] = (TOOL_CALLS.labels(*key), TOOL_CALL_SECONDS.labels(server, verdict))
    series[0].inc()
    if duration_ms is not None:
        series[1].observe(duration_ms / 1000)


def count_decision(status: str) -> None:
    DECISIONS.labels(status).inc()


def count_ending(ending: str, waited_s: float) -> None:
    """A decision ended `waited_s` after it opened (once per decision: the ending's compare-and-set won here)."""
    DECISIONS.labels(ending).inc()
    DECISION_SECONDS.labels(ending).observe(max(waited_s, 0.0))


def count_outbox_failure(channel: str, *, given_up: bool) -> None:
    if given_up:
        OUTBOX_GIVEN_UP.labels(channel).inc()
    else:
        OUTBOX_FAILURES.labels(channel).inc()


def policy_loaded(ok: bool, at: float) -> None:
    POLICY_RELOAD_SUCCESS.set(1 if ok else 0)
    POLICY_RELOAD_TIME.set(at)


def upstreams_up(states: dict[str, bool]) -> None:
    """Each upstream's state now (set at scrape time from the proxies)."""
    for server, up in states.items():
        UPSTREAM_UP.labels(server).set(1 if up else 0)


def watch_held_calls(count: Callable[[], int]) -> None:
    HELD_CALLS.set_function(count)


class PendingDecisions:
    """`holdgate_pending_decisions` from the database: one indexed COUNT, at most once per `max_age_s`.

    A scrape reads the count the database holds (right across replicas, whichever answers the scrape);
    several scrapers within `max_age_s` share one query. A query that fails or takes longer than `timeout_s`
    sets the gauge to NaN ("unknown", so an alert on a high count neither fires nor clears on a stale
    number) and the scrape still answers; /readyz says the database does not answer.
    """

    def __init__(
        self,
        count: Callable[[], Awaitable[int]],
        *,
        max_age_s: float = 2.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:  # concurrent scrapes wait for one query instead of each sending their own
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self.max_age_s:
                return
            try:
                async with asyncio.timeout(self.timeout_s):
                    pending = float(await self._count())
            except Exception as exc:  # the scrape answers anyway: the count is unknown
                logger.warning("metrics: could not count pending decisions (%s)", type(exc).__name__)
                pending = math.nan
            PENDING_DECISIONS.set(pending)
            self._read_at = self._clock()


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


SHADOW_CALLS = Counter("holdgate_shadow_calls_total", "Calls the shadow policy also decided (service.policy.shadow)")
SHADOW_DISAGREEMENTS = Counter(
    "holdgate_shadow_disagreements_total",
    "Calls where the shadow policy's action differs from the enforced one, by the shadow's rule and both actions",
    ["rule", "enforced", "shadow"],
)
SHADOW_ERRORS = Counter("holdgate_shadow_errors_total", "Calls the shadow policy failed to evaluate (the log says why)")
SHADOW_LOADED = Gauge(
    "holdgate_shadow_policy_loaded",
    "1 while a shadow policy runs; 0 with none, or while its file is refused and shadowing is paused",
)


def count_shadow_call() -> None:
    SHADOW_CALLS.inc()


def count_shadow_disagreement(rule: str, enforced: str, shadow: str) -> None:
    SHADOW_DISAGREEMENTS.labels(rule, enforced, shadow).inc()


def count_shadow_error() -> None:
    SHADOW_ERRORS.inc()


def set_shadow_loaded(loaded: bool) -> None:
    SHADOW_LOADED.set(1 if loaded else 0)
