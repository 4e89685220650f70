"""Liveness (`/healthz`), readiness (`/readyz`) and Prometheus metrics.

`/healthz` answers 200 while the process serves, and says what is wrong: `"status": "degraded"`
with one reason per problem (the policy file on disk was refused at reload and an older version is in
force; the shadow policy's file was refused and shadowing is paused; an upstream is not reachable; the
audit writer's last write failed). Reasons name the policy,
the upstream or the audit writer, never a file path, a URL or a person: the route needs no token.
Restarting the process would not fix any of these, so it is not a liveness failure.

`/readyz` is for load balancers: 200 once start-up has finished (policy loaded, upstreams probed,
approvals running) while the database answers, 503 with the reasons otherwise (also while shutting
down), so traffic goes to a replica that can decide and record calls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service import metrics as holdgate_metrics
from service.api.deps import get_state

if TYPE_CHECKING:
    from service.app import AppState

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

DATABASE_TIMEOUT_S = 2.0
"""How long /readyz waits for the database's answer to `SELECT 1` (load balancers probe every few seconds)."""


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    """Up; `status` is `ok`, or `degraded` with `problems`; the policy version in force; each upstream's state."""
    state = get_state(request)
    problems = _problems(state)
    return {
        "status": "degraded" if problems else "ok",
        "problems": problems,
        "policy_version": state.policy.current.version,
        "policy_reload_refused": state.policy.last_error is not None,
        "servers": {
            name: {"probed": proxy.info is not None, "up": proxy.upstream_connected}
            for name, proxy in state.proxies.items()
        },
        "audit": {"last_write_failed": state.audit.last_write_failed, "backlog": state.audit.backlog},
        "shadow_policy": {
            "active": state.shadow.active,
            "version": state.shadow.current.version if state.shadow.current is not None else None,
            "paused": state.shadow.last_error is not None,
        },
    }


@router.get(
    "/readyz",
    responses={503: {"description": "not ready: starting, stopping, or the database does not answer"}},
)
async def readyz(request: Request) -> JSONResponse:
    """200 when this replica can take traffic (started, policy loaded, database answering); 503 with the reasons."""
    state = get_state(request)
    problems: list[str] = []
    if not state.serving:
        problems.append("not serving: starting up or shutting down")
    database = await _database_problem(state)
    if database is not None:
        problems.append(database)
    if problems:
        return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready", "problems": []})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format; what several replicas share (pending decisions) is read from the database."""
    state = get_state(request)
    await state.pending_decisions.refresh()
    holdgate_metrics.upstreams_up({name: proxy.upstream_connected for name, proxy in state.proxies.items()})
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _problems(state: AppState) -> list[str]:
    problems: list[str] = []
    if state.policy.last_error is not None:
        problems.append(
            f"policy: the policy file on disk was refused at reload; version {state.policy.current.version} "
            "stays in force (the log says why)"
        )
    if state.shadow.last_error is not None:
        problems.append(
            "shadow policy: its file was refused, so shadowing is paused until it loads; the enforced policy is "
            "not affected (the log says why)"
        )
    for name, proxy in sorted(state.proxies.items()):
        if proxy.info is None:
            problems.append(f"upstream {name!r}: not reachable (retried on next use)")
        elif not proxy.upstream_connected:
            problems.append(f"upstream {name!r}: its connection ended (reconnects on next use)")
    if state.audit.last_write_failed:
        problems.append(f"audit: the last write failed; {state.audit.backlog} record(s) waiting (the log says why)")
    return problems


async def _database_problem(state: AppState) -> str | None:
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_S):
            async with state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to answer means: not ready
        if not state.database_failing:
            logger.warning("readiness: the database does not answer (%s)", type(exc).__name__)
        state.database_failing = True
        return "database: not answering"
    state.database_failing = False
    return None
