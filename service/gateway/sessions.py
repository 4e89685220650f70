"""How many MCP sessions may be open at once: in all, and per grant.

A 2025-era downstream session owns an upstream session for its whole life, and for a stdio upstream
that is a child process (about 70 MB of RSS for a Python server). Without a bound, one grant opening
sessions in a loop took 12 GB and the host with it. The budget is shared by every server's session
manager, so the limits hold across `/mcp/{server}` paths.

A new session is admitted or refused here, in one synchronous step (no await between the check and
the count, so two concurrent openings cannot both take the last slot); its slot comes back when the
session manager discards the session, however it ended (client DELETE, idle timeout, a refused
opening request, shutdown). Over the grant's limit is the grant's doing: HTTP 429. Over the global
limit is the host's: HTTP 503. Both carry `Retry-After`: the seconds until the soonest of the
sessions concerned may close by idling (a session with a request in flight does not idle), at least 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

import anyio
from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCError
from starlette.responses import Response

from service import metrics

SESSION_LIMIT_REACHED = INTERNAL_ERROR
"""The JSON-RPC code of a refusal (the SDK's own at its limit): no standard code says "busy"."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a new session was not opened, and what the client is told."""

    limit: str
    """The setting that refused it: `HOLDGATE_MAX_SESSIONS_PER_GRANT` or `HOLDGATE_MAX_SESSIONS`."""
    status: HTTPStatus
    message: str
    retry_after_s: int

    def response(self) -> Response:
        """The HTTP answer: a JSON-RPC error without an id (the request opened no session), and Retry-After."""
        body = JSONRPCError(
            jsonrpc="2.0",
            id=None,
            error=ErrorData(code=SESSION_LIMIT_REACHED, message=self.message, data={"limit": self.limit}),
        )
        return Response(
            body.model_dump_json(by_alias=True, exclude_unset=True),
            status_code=self.status,
            media_type="application/json",
            headers={"Retry-After": str(self.retry_after_s)},
        )


IdleDeadline = Callable[[], float]
"""When a session will close by idling, in anyio time (inf while a request is in flight)."""


class SessionBudget:
    """The open sessions of every session manager, by id, with their grants; the one place that counts them."""

    def __init__(self, *, max_sessions: int, max_per_grant: int, idle_s: float) -> None:
        self.max_sessions = max_sessions
        self.max_per_grant = max_per_grant
        self.idle_s = idle_s
        self._grants: dict[str, str] = {}
        self._per_grant: dict[str, int] = {}
        self._deadlines: dict[str, IdleDeadline] = {}

    @property
    def open(self) -> int:
        return len(self._grants)

    def open_for(self, grant: str) -> int:
        return self._per_grant.get(grant, 0)

    def admit(self, session_id: str, grant: str, idle_deadline: IdleDeadline) -> Refusal | None:
        """Count `session_id` for `grant`, or say which limit refuses it (nothing is counted then)."""
        refusal = self._refusal(grant)
        if refusal is not None:
            metrics.count_refused_session(refusal.limit)
            return refusal
        self._grants[session_id] = grant
        self._per_grant[grant] = self.open_for(grant) + 1
        self._deadlines[session_id] = idle_deadline
        return None

    def _refusal(self, grant: str) -> Refusal | None:
        if self.open_for(grant) >= self.max_per_grant:
            return Refusal(
                limit="HOLDGATE_MAX_SESSIONS_PER_GRANT",
                status=HTTPStatus.TOO_MANY_REQUESTS,
                message=f"grant '{grant}' already has {self.max_per_grant} open sessions "
                f"(HOLDGATE_MAX_SESSIONS_PER_GRANT): end one (HTTP DELETE) or wait for one to idle out",
                retry_after_s=self._retry_after(sid for sid, owner in self._grants.items() if owner == grant),
            )
        if self.open >= self.max_sessions:
            return Refusal(
                limit="HOLDGATE_MAX_SESSIONS",
                status=HTTPStatus.SERVICE_UNAVAILABLE,
                message=f"holdgate already has {self.max_sessions} open sessions (HOLDGATE_MAX_SESSIONS): "
                "try again later",
                retry_after_s=self._retry_after(self._grants),
            )
        return None

    def release(self, session_id: str) -> None:
        """Give the session's slot back; a session released twice (or never admitted) changes nothing."""
        grant = self._grants.pop(session_id, None)
        self._deadlines.pop(session_id, None)
        if grant is None:
            return
        left = self._per_grant[grant] - 1
        if left:
            self._per_grant[grant] = left
        else:
            del self._per_grant[grant]

    def _retry_after(self, session_ids: Iterable[str]) -> int:
        soonest = min((self._deadlines[sid]() for sid in session_ids), default=math.inf)
        wait = soonest - anyio.current_time() if math.isfinite(soonest) else self.idle_s
        return max(1, math.ceil(min(wait, self.idle_s)))
